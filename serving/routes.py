"""The server's one route table: every URL, its methods, its view, and whether it needs the token.

Flask's URL map is built from ``ROUTES`` (``serving.app``), the inference routes
marked ``direct`` are matched from it straight from WSGI (``serving.direct``),
and the bearer-token check reads ``token`` from it (``serving.security``).

A view is transport-neutral: ``view(extensions, environ, body, **url_args)``
returns an ``Answer`` or raises a ``ServingError``, with no Flask in it; the
app wraps each in one Flask view, and the direct path calls it as it is.

TF Serving's REST URLs share their shape: ``GET /v1/models/m`` is a status and
``POST /v1/models/m:predict`` an inference. The converters draw the line TF
Serving's own URL patterns draw: a model name, version or label (``segment``)
has no ``:``, and the last segment of a ``/v1`` POST URL (``verb_target``) is
``<name|version|label>:<verb>``. So a GET on ``.../m:predict`` is a 405 naming
POST, and a POST on ``.../m`` a 405 naming GET and HEAD.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from werkzeug.routing import BaseConverter
from werkzeug.wsgi import get_path_info


class Answer(NamedTuple):
    """What a view answers: the body and how to send it."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class Segment(BaseConverter):
    """A model name, version or label in a ``/v1`` URL: TF Serving's ``[^/:]+``."""

    regex = "[^/:]+"


class VerbTarget(BaseConverter):
    """The last segment of a ``/v1`` POST URL: ``<name|version|label>:<verb>``."""

    regex = "[^/]*:[^/]*"


CONVERTERS: dict[str, type[BaseConverter]] = {"segment": Segment, "verb_target": VerbTarget}
_PLAIN = BaseConverter.regex  # werkzeug's default converter: one path segment
_VARIABLE = re.compile(r"<(?:(\w+):)?(\w+)>")


@dataclasses.dataclass(frozen=True)
class Route:
    """One URL rule.

    Attributes:
        rule: The URL in werkzeug's rule syntax, with the converters above.
        methods: What it takes (GET also takes HEAD; every URL takes OPTIONS).
        view: ``"module.function"`` in ``serving.views``; also the Flask endpoint.
        token: False for the probes of load balancers and orchestrators, which carry
            no token: TF Serving's model status and KServe's liveness and readiness.
        direct: Answered straight from WSGI, without Flask's per-request machinery.
    """

    rule: str
    methods: tuple[str, ...]
    view: str
    token: bool = True
    direct: bool = False

    def needs_token(self, method: str) -> bool:
        """Whether a request of ``method`` on this route must carry the token."""
        return self.token or method not in self.methods and not (
            method == "HEAD" and "GET" in self.methods
        )

    def pattern(self) -> re.Pattern[str]:
        """The rule as a regular expression, one named group per URL variable."""
        parts, end = [], 0
        for match in _VARIABLE.finditer(self.rule):
            converter, name = match.groups()
            regex = CONVERTERS[converter].regex if converter else _PLAIN
            parts += [re.escape(self.rule[end:match.start()]), f"(?P<{name}>{regex})"]
            end = match.end()
        return re.compile("".join([*parts, re.escape(self.rule[end:])]))


GET, POST = ("GET",), ("POST",)
_V1 = "/v1/models/<segment:name>"
_V2 = "/v2/models/<name>"

ROUTES: tuple[Route, ...] = (
    # TF Serving's REST API
    Route(_V1, GET, "tf_serving.status", token=False),
    Route(f"{_V1}/versions/<segment:version>", GET, "tf_serving.status"),
    Route(f"{_V1}/labels/<segment:label>", GET, "tf_serving.status"),
    Route(f"{_V1}/metadata", GET, "tf_serving.metadata"),
    Route(f"{_V1}/versions/<segment:version>/metadata", GET, "tf_serving.metadata"),
    Route(f"{_V1}/labels/<segment:label>/metadata", GET, "tf_serving.metadata"),
    # ":predict" is part of the last path segment, so the view splits the verb off.
    Route("/v1/models/<verb_target:target>", POST, "tf_serving.infer", direct=True),
    Route(f"{_V1}/versions/<verb_target:target>", POST, "tf_serving.infer_version", direct=True),
    Route(f"{_V1}/labels/<verb_target:target>", POST, "tf_serving.infer_label", direct=True),
    Route("/monitoring/prometheus/metrics", GET, "monitoring.prometheus"),
    # The Open Inference Protocol (KServe V2) and Triton's extensions
    Route("/v2", GET, "kserve_v2.server_metadata"),
    Route("/v2/health/live", GET, "kserve_v2.live", token=False),
    Route("/v2/health/ready", GET, "kserve_v2.ready", token=False),
    Route(f"{_V2}/ready", GET, "kserve_v2.model_ready"),
    Route(f"{_V2}/versions/<version>/ready", GET, "kserve_v2.model_ready"),
    Route(_V2, GET, "kserve_v2.model_metadata"),
    Route(f"{_V2}/versions/<version>", GET, "kserve_v2.model_metadata"),
    Route(f"{_V2}/config", GET, "kserve_v2.model_config"),
    Route(f"{_V2}/versions/<version>/config", GET, "kserve_v2.model_config"),
    Route("/v2/models/stats", GET, "kserve_v2.statistics"),
    Route(f"{_V2}/stats", GET, "kserve_v2.statistics"),
    Route(f"{_V2}/versions/<version>/stats", GET, "kserve_v2.statistics"),
    Route("/v2/repository/index", POST, "kserve_v2.repository_index"),
    Route("/v2/repository/models/<name>/load", POST, "kserve_v2.model_control"),
    Route("/v2/repository/models/<name>/unload", POST, "kserve_v2.model_control"),
    Route(f"{_V2}/infer", POST, "kserve_v2.infer", direct=True),
    Route(f"{_V2}/versions/<version>/infer", POST, "kserve_v2.infer", direct=True),
    Route("/openapi.json", GET, "openapi.document"),
)

BY_RULE: Mapping[str, Route] = {route.rule: route for route in ROUTES}


def path_of(environ: Mapping[str, Any]) -> str:
    """The request path as Flask's ``request.path`` gives it, from the WSGI environ."""
    return "/" + get_path_info(environ).lstrip("/")
