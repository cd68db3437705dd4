"""Every error leaves the service as JSON, mapped in one place: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from lsr.errors import (
    IndexLockedError,
    IndexNotFoundError,
    InvalidInputError,
    LsrError,
    MissingDependencyError,
    ModelNotFoundError,
)

__all__ = ["ApiError", "register_error_handlers"]

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with its HTTP status, raised by request handling."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _response(status: int, code: str, message: str):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return _response(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return _response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(LsrError)
    def lsr_error(exc: LsrError):
        if isinstance(exc, IndexLockedError):
            return _response(503, "index_busy", f"{exc} Try again.")
        if isinstance(exc, InvalidInputError):
            return _response(400, "invalid_request", str(exc))
        if isinstance(exc, IndexNotFoundError | ModelNotFoundError | MissingDependencyError):
            return _response(503, "unavailable", str(exc))
        log.exception("lsr error")
        return _response(500, "internal_error", str(exc))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return _response(500, "internal_error", "internal server error; see the server log")
