"""The Prometheus scrape endpoint, at TF Serving's path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serving.routes import Answer
from serving.views import tf_serving

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def prometheus(extensions: Mapping[str, Any], environ: Mapping[str, Any], body: bytes) -> Answer:
    text = extensions[tf_serving.EXTENSION].metrics.render()
    return Answer(text.encode() if isinstance(text, str) else text, content_type=CONTENT_TYPE)
