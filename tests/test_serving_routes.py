"""The route table: Flask's URL map and the direct WSGI path match the same URLs alike."""

import pytest
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from serving import routes

# Each kind of URL the direct path may see, and near misses of each.
PATHS = [
    "/v1/models/m:predict", "/v1/models/m:classify", "/v1/models/m:explain", "/v1/models/:predict",
    "/v1/models/m", "/v1/models/a:b:predict", "/v1/models/m/versions/3:regress",
    "/v1/models/m/labels/stable:predict", "/v1/models/m/versions/3/metadata",
    "/v1/models/m/x:predict", "/v1/models/m:predict/", "/v1/models/m.1-2_x:predict",
    "/v2/models/m/infer", "/v2/models/m/versions/7/infer", "/v2/models/m/versions/infer",
    "/v2/models/m:x/infer", "/v2/models/m/infer/", "/v2/repository/index", "/v2/models/stats",
    "/v1/models/a:b/versions/3:regress", "/v1/models/m/labels/a:b:predict", "/v2/models//infer",
]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from serving import create_app

    return create_app({"MODELS": str(tmp_path_factory.mktemp("empty")),
                       "FILE_SYSTEM_POLL_WAIT_SECONDS": 0})


@pytest.mark.parametrize("path", PATHS)
def test_direct_path_matches_what_the_url_map_matches(app, path):
    urls = app.url_map.bind("localhost")
    try:
        endpoint, args = urls.match(path, method="POST")
    except (NotFound, MethodNotAllowed, RequestRedirect):  # a redirect: Flask answers it
        endpoint, args = None, None
    direct_views = {route.view for route in routes.ROUTES if route.direct}
    flask_says = (endpoint, args) if endpoint in direct_views else (None, None)
    found = app.wsgi_app._match(path, "POST")  # noqa: SLF001 - the matcher itself
    direct_says = (None, None) if found is None else (found[0].view, found[2])
    assert direct_says == flask_says


def test_url_map_holds_the_table(app):
    served = {(rule.rule, rule.endpoint, frozenset(rule.methods - {"HEAD", "OPTIONS"}))
              for rule in app.url_map.iter_rules() if rule.endpoint != "static"}
    assert served == {(r.rule, r.view, frozenset(r.methods)) for r in routes.ROUTES}
