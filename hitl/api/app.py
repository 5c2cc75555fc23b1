"""The FastAPI application: JSON API under ``/api``, the review page at ``/``.

Built by ``create_app`` from an already connected ``HitlClient`` and a store
engine, so ``hitl serve``, ``hitl up`` (same event loop as the worker) and the
tests all run the same app. OpenAPI is at ``/openapi.json``, docs at ``/docs``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from fastapi import FastAPI, Request, Response, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.routing import Match, Mount
from starlette.types import Scope

from hitl import __version__
from hitl.api import auth, routes_dashboard, routes_decisions, routes_queue
from hitl.api.codec import codec_router
from hitl.api.deps import Services, validation_error_response
from hitl.api.models import Health, Vocabulary
from hitl.api.queue import QueueSource, StoreQueue
from hitl.client import HitlClient
from hitl.enums import ErrorCategory, RiskLevel, Zone
from hitl.errors import (
    DecisionClosed,
    DecisionConflict,
    DecisionNotFound,
    DecisionUnreadable,
    HitlError,
    InputError,
    TemporalUnavailable,
)
from hitl.limits import MAX_BODY_BYTES, MAX_CODEC_BODY_BYTES
from hitl.outbound import DEFAULT_POLICY, OutboundPolicy

STATIC = Path(__file__).parent / "static"
ALLOW_CANDIDATES = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

# The page loads nothing from elsewhere and runs no inline script: model output
# rendered on it is data, never markup.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

_STATUS_FOR: tuple[tuple[type[HitlError], int], ...] = (
    (DecisionNotFound, status.HTTP_404_NOT_FOUND),
    (DecisionConflict, status.HTTP_409_CONFLICT),
    (DecisionClosed, status.HTTP_409_CONFLICT),
    (InputError, 422),  # by number: the constant was renamed across Starlette versions
    (TemporalUnavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
    (DecisionUnreadable, status.HTTP_503_SERVICE_UNAVAILABLE),
)


def create_app(*, hitl: HitlClient, engine: Engine, queue: QueueSource | None = None,
               sessions: auth.SessionStore | None = None,
               codec_cors_origins: Sequence[str] = (),
               outbound: OutboundPolicy = DEFAULT_POLICY) -> FastAPI:
    """The app; ``queue`` defaults to the store's review_queue table (see ``hitl.api.queue``).

    ``outbound`` is the worker's outbound policy (``HITL_OUTBOUND_ALLOW_HOSTS``): a
    submitted URL it refuses without resolving is a 422 naming the field.

    When the client encrypts payloads (``HITL_CODEC_KEYS``), the app also serves the
    codec server at ``/codec`` for the Temporal UI, whose origins are ``codec_cors_origins``.
    """
    app = FastAPI(
        title="hitl", version=__version__,
        summary="Durable human-in-the-loop approval for AI decisions, on Temporal.",
        description="Submit decisions, list the review queue, and approve or reject. "
                    "Reviewer endpoints take `Authorization: Bearer <reviewer token>` "
                    "(or the review page's session cookie plus `X-CSRF-Token`). "
                    f"A request body over {MAX_BODY_BYTES} bytes is refused with 413 before "
                    "it is parsed.",
        # Counted while the body is read (and from Content-Length, before): 413 unparsed.
        max_body_size=MAX_BODY_BYTES,
    )
    app.state.services = Services(
        hitl=hitl, engine=engine, queue=queue or StoreQueue(engine),
        sessions=sessions or auth.SessionStore(), outbound=outbound)

    @app.exception_handler(HitlError)
    async def _hitl_error(_request: Request, exc: Exception) -> JSONResponse:
        code = next((code for kind, code in _STATUS_FOR if isinstance(exc, kind)),
                    status.HTTP_500_INTERNAL_SERVER_ERROR)
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return validation_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 413:  # by number, like 422 above
            limit = request.scope.get(MAX_BODY_SIZE_SCOPE_KEY, MAX_BODY_BYTES)
            return JSONResponse({"detail": f"the request body is over {limit} bytes"},
                                status_code=exc.status_code)
        headers = exc.headers or {}
        if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED and "Allow" in headers:
            exc.headers = {**headers, "Allow": _allowed(app, request.scope) or headers["Allow"]}
        return await http_exception_handler(request, exc)

    @app.middleware("http")
    async def _headers(request: Request,
                       call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/healthz", response_model=Health, tags=["meta"])
    async def healthz() -> Health:
        """Liveness, for docker-compose and load balancers."""
        return Health()

    @app.get("/api/vocabulary", response_model=Vocabulary, tags=["meta"])
    async def vocabulary() -> Vocabulary:
        """Error categories, zones and risk levels, in order (the page's pick lists)."""
        return Vocabulary(error_categories=list(ErrorCategory), zones=list(Zone),
                          risks=list(RiskLevel))

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.include_router(auth.router)
    app.include_router(routes_queue.router)
    app.include_router(routes_decisions.router)
    app.include_router(routes_dashboard.router)
    if hitl.temporal.data_converter.payload_codec is not None:
        app.include_router(codec_router(hitl.temporal.data_converter.payload_codec,
                                        cors_origins=codec_cors_origins),
                           max_body_size=MAX_CODEC_BODY_BYTES)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _allowed(app: FastAPI, scope: Scope) -> str:
    """Every method the path answers to. Starlette's 405 names only those of the first
    route on the path, so ``OPTIONS /api/session`` claimed POST alone (RFC 9110 15.5.6)."""
    routes = [route for route in app.router.routes if not isinstance(route, Mount)]
    return ", ".join(method for method in ALLOW_CANDIDATES if any(
        route.matches({**scope, "method": method})[0] is Match.FULL for route in routes))
