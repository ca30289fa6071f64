"""A Flask model server speaking TensorFlow Serving's REST API (``import serving``)."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Lazy, so `serving.cli` (and gunicorn's master process) never imports TensorFlow:
    # TF must start in the worker, after the fork.
    if name == "create_app":
        from serving.app import create_app

        return create_app
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
