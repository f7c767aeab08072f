"""GET /services/mtm/v1/openapi.json (public)."""

from flask import current_app, jsonify

from .. import openapi as document  # a module import: openapi.py itself imports from this package
from . import bp


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 document of this API."""
    return jsonify(document.openapi_document(current_app.config["ISSUER"]))
