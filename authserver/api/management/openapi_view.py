"""GET /services/mtm/v1/openapi.json (public)."""

from flask import current_app, jsonify

from ..openapi import openapi_document
from . import bp


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 document of this API."""
    return jsonify(openapi_document(current_app.config["ISSUER"]))
