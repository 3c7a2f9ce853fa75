"""Property-based checks of the API against its own OpenAPI schema (schemathesis, few examples).

Random uploads, parameters and job ids must never produce a 5xx, an undocumented status code,
an undocumented content type, or a body that does not match the documented schema.
"""

from __future__ import annotations

import atexit

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from medsr.service.app import Settings, create_app  # noqa: E402

# schemathesis' lazy ``from_fixture`` does not work with pytest 9, so the app is built at import;
# its private work folder is removed when the module's tests end (or at exit if they never run).
_app = create_app(Settings(weights_dirs=(), pretrained=False, max_upload_mb=1))
atexit.register(_app.state.service.stop)
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@pytest.fixture(scope="module", autouse=True)
def _stop_service():
    yield
    _app.state.service.stop()


@schema.parametrize()
@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_openapi(case):
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ]
    )
