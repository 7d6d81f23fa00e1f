"""The OpenAPI document of the HTTP API, as the API really answers.

FastAPI documents a 422 with its own validation error model for every operation
with parameters; the gateway answers invalid input with a 400 and its one error
shape (``ErrorJson``), so the document says that instead.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi


def document_errors_as_400(app: FastAPI) -> None:
    """Makes ``/openapi.json`` say what the API does: invalid input is a 400 ``ErrorJson``, never a 422."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    responses = operation.get("responses", {})
                    if responses.pop("422", None) is not None and "400" not in responses:
                        responses["400"] = {
                            "description": "Invalid request; `field` names the culprit.",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorJson"}}
                            },
                        }
            schemas = schema.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
