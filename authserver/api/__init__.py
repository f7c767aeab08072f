"""HTTP blueprints."""

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge


def refuse_long_chunked_body() -> None:
    """413 for a chunked body (no Content-Length) longer than MAX_CONTENT_LENGTH.

    Werkzeug refuses a declared Content-Length over the limit, but reads a
    chunked body only up to the limit and then stops without a word, so the
    view would run on the first MAX_CONTENT_LENGTH bytes. Read the body here
    (that read is bounded by the limit) and refuse it if anything is left.
    """
    if request.content_length is not None:
        return
    if "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        return
    body = request.get_data(cache=True)
    if len(body) >= current_app.config["MAX_CONTENT_LENGTH"] and request.input_stream.read(1):
        raise RequestEntityTooLarge()
