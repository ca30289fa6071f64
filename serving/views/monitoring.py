"""The Prometheus scrape endpoint, at TF Serving's path."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from serving.views import tf_serving

blueprint = Blueprint("monitoring", __name__)


@blueprint.get("/monitoring/prometheus/metrics")
def prometheus() -> Response:
    text = current_app.extensions[tf_serving.EXTENSION].metrics.render()
    return Response(text, mimetype="text/plain; version=0.0.4")
