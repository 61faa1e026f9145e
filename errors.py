"""The one error family: every failure a client can see; routes/http.py maps each to the JSON error body."""
from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Something went wrong."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())
        self.message = message or (self.__doc__ or "").strip()
        self.details = details or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(AppError):
    """The request is malformed."""

    status = 400
    code = "bad_request"


class Unauthorized(AppError):
    """A valid API token is required."""

    status = 401
    code = "unauthorized"


class Forbidden(AppError):
    """The token is valid, but its scope does not allow this."""

    status = 403
    code = "forbidden"


class NotFound(AppError):
    """No such resource."""

    status = 404
    code = "not_found"


class Conflict(AppError):
    """The resource is not in a state that allows this."""

    status = 409
    code = "conflict"


class Invalid(AppError):
    """Some values are invalid."""

    status = 422
    code = "invalid"


class Unavailable(AppError):
    """A dependency is unavailable; try again later."""

    status = 503
    code = "unavailable"
