"""One JSON shape for every error the API returns::

    {"error": {"code": "invalid_cursor", "message": "cursor is not one this API issued", "field": "cursor"}}

``code`` is machine-readable and stable; ``field`` names the offending parameter when there is one.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers
        self.code = code
        self.message = message
        self.field = field
        super().__init__(message)


def _body(code: str, message: str, field: str | None = None) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "field": field}}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_body(exc.code, exc.message, exc.field), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body")]
        field = ".".join(loc) or None
        message = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p not in ('query', 'path', 'body'))}: {e.get('msg')}"
            for e in exc.errors()
        )
        return JSONResponse(_body("invalid_request", message, field), status_code=422)

    @app.exception_handler(DataError)
    async def _data(_: Request, exc: DataError) -> JSONResponse:
        # a value the database cannot take: a NUL character in text, an integer beyond BIGINT, …
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "value out of range"
        return JSONResponse(_body("invalid_value", f"a parameter has a value the database cannot use: {reason}"),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers or None)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (RFC 9110 §15.5.6: a 405 lists them in ``Allow``).

    Starlette stops at the first route whose path matches and lists only that route's methods; GET and POST on one
    path are two FastAPI routes, so a 405 said ``Allow: GET`` for a path that also takes POST."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse, "description": "A parameter is not usable (a cursor or sort this list does not "
                                                 "have); `field` names it."},
    401: {"model": ErrorResponse, "description": "No valid credentials: a bearer token or API key is needed."},
    403: {"model": ErrorResponse, "description": "The caller's role may not do this."},
    422: {"model": ErrorResponse, "description": "A parameter is invalid; `field` names it."},
}
NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorResponse, "description": "No such resource."},
}
CONFLICT: dict[int | str, dict[str, object]] = {
    409: {"model": ErrorResponse, "description": "Conflicts with what is stored (a code or name already taken, "
                                                 "a state that does not allow it)."},
}
