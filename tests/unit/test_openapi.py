"""The gateway's OpenAPI description (ingest/openapi.yaml) is a valid OpenAPI 3.1 document, and it
describes exactly the routes the gateway serves: no route undocumented, no documented path missing.
(tests/integration/test_agency_door.py calls each of them with its examples on a running gateway.)"""

from __future__ import annotations

import yaml
from highland.catalog.loader import default_catalog
from highland.ingest.gateway import OPENAPI, Gateway, create_app
from openapi_spec_validator import validate

from highland.settings import Settings


def spec() -> dict:
    return yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_the_description_validates_as_openapi():
    validate(spec())  # raises on any error


def test_every_route_the_gateway_serves_is_documented_and_every_documented_one_is_served():
    app = create_app(Gateway(Settings(), default_catalog(), lambda token: None))
    served = {(route.method.lower(), route.resource.canonical) for route in app.router.routes()
              if route.method != "HEAD" and route.resource is not None}
    documented = {(method, path) for path, item in spec()["paths"].items() for method in item}
    assert served == documented


def test_every_request_example_names_the_response_it_gets():
    """Each request example's name appears under exactly one response status, with an example body
    (the integration test sends the one and expects the other)."""
    for path, item in spec()["paths"].items():
        for method, operation in item.items():
            examples = {name for media in operation.get("requestBody", {}).get("content", {}).values()
                        for name in media.get("examples", {})}
            for name in examples:
                statuses = [status for status, response in operation["responses"].items()
                            if name in response.get("content", {}).get("application/json", {}).get("examples", {})]
                assert len(statuses) == 1, (method, path, name, statuses)
