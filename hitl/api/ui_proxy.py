"""A read-only front for the Temporal UI: operators watch everything and change nothing.

The UI that ``temporal server start-dev`` embeds can signal, update, reset, cancel,
terminate and start workflows, run batch jobs and edit schedules, and the dev server
has no switch to turn that off (it builds the UI's config in code, without
``DisableWriteActions``). Anyone who can open the UI could then send a reviewer's
signal or reset a decision past its approval. So ``hitl up`` runs the dev server's UI
on an internal loopback port and serves the public UI port through this proxy:

- reads pass: ``GET``, ``HEAD`` and ``OPTIONS`` anywhere (every ``GET`` route of the
  UI server's API is a read: Describe, List, Count, Get, Poll), and ``POST`` to a
  workflow query (``/api/v1/namespaces/NS/workflows/ID/query/TYPE``), which the UI
  uses for the stack trace and the workflow's metadata and which cannot change a
  workflow. That is the rule the UI server itself applies with ``DisableWriteActions``
  set, made stricter: the query path must have exactly that shape both as sent and
  decoded, so an ID holding an encoded ``/query/`` cannot smuggle a signal through.
- every other request is refused with 403 and a message in the API's own error shape
  (``{"code": 7, "message": ...}``, gRPC's PERMISSION_DENIED), which the UI shows.
- ``/api/v1/settings`` is rewritten so the UI hides every write action instead of
  offering buttons that would only fail.

The refusal is the guarantee; the rewritten settings are for the operator's eyes.
None of this covers the Temporal frontend itself (gRPC, 7233): whoever reaches it can
do everything the UI could. ``hitl up --ui-write-actions`` serves the UI directly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import unquote

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from hitl.api.server import serving

log = logging.getLogger(__name__)

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SETTINGS_PATH = b"/api/v1/settings"
QUERY_PATH = re.compile(r"/api/v1/namespaces/[^/]+/workflows/[^/]+/query/[^/]+")
# The settings the UI reads to hide an action (ui-server's SettingsResponse, 2.54).
# RefreshWorkflowCountsDisabled and HideWorkflowQueryErrors are not write actions.
WRITE_ACTION_FLAGS = (
    "DisableWriteActions", "WorkflowTerminateDisabled", "WorkflowCancelDisabled",
    "WorkflowSignalDisabled", "WorkflowUpdateDisabled", "WorkflowResetDisabled",
    "WorkflowPauseDisabled", "BatchActionsDisabled", "StartWorkflowDisabled",
    "ActivityCommandsDisabled",
)
# gRPC status codes: the UI reads the API's errors in that shape.
INVALID_ARGUMENT, PERMISSION_DENIED, UNAVAILABLE = 3, 7, 14
REFUSAL = ("the Temporal UI served by hitl is read-only: {method} {path} would change "
           "workflows; restart with `hitl up --ui-write-actions` to allow it")
MAX_QUERY_BODY = 1 << 20  # a query's arguments; the frontend's own blob limit is 2 MiB
MAX_SETTINGS_BODY = 1 << 16
# Long polls (a history waiting for new events) hold a read open for up to a minute.
UPSTREAM_TIMEOUT = httpx.Timeout(connect=5.0, read=90.0, write=30.0, pool=10.0)
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length",
})
# Request headers never forwarded: hop-by-hop ones, the encoding (set below) and the
# method overrides some gateways honour (grpc-gateway, under conditions), so a POST to a
# query stays a query.
NOT_FORWARDED = HOP_BY_HOP | {"accept-encoding", "x-http-method-override",
                              "x-http-method", "x-method-override"}
# Response headers uvicorn writes itself.
RESPONSE_NOT_FORWARDED = HOP_BY_HOP - {"content-length"} | {"date", "server"}


def allows(method: str, raw_path: str) -> bool:
    """Whether a request can only read: the one rule the proxy enforces.

    ``raw_path`` is the path as sent (percent-encoded, without the query string).
    """
    if method in READ_METHODS:
        return True
    decoded = unquote(raw_path)
    return (method == "POST" and QUERY_PATH.fullmatch(raw_path) is not None
            and QUERY_PATH.fullmatch(decoded) is not None
            and not {".", ".."} & set(decoded.split("/")))


def read_only_settings(settings: dict[str, object]) -> dict[str, object]:
    """The UI's settings with every write action switched off, the rest kept."""
    return {**settings, **dict.fromkeys(WRITE_ACTION_FLAGS, True)}


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "details": []},
                        status_code=status)


def _forwarded(headers: httpx.Headers, *, drop: frozenset[str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers.multi_items() if k.lower() not in drop]


async def _bounded(chunks: AsyncIterator[bytes], limit: int) -> bytes | None:
    """The whole body, or None past ``limit`` bytes."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _rewritten_settings(upstream: httpx.Response) -> Response:
    raw = await _bounded(upstream.aiter_bytes(), MAX_SETTINGS_BODY)
    try:
        settings = json.loads(raw) if raw is not None and upstream.status_code == 200 else None
    except ValueError:
        settings = None
    if not isinstance(settings, dict):
        return _error(502, UNAVAILABLE, "the Temporal UI's settings were unreadable")
    response = JSONResponse(read_only_settings(settings))
    # The UI's cookies (its CSRF token) and cache headers still apply.
    drop = RESPONSE_NOT_FORWARDED | {"content-length", "content-type", "content-encoding"}
    for key, value in _forwarded(upstream.headers, drop=drop):
        response.headers.append(key, value)
    return response


class ReadOnlyUIProxy:
    """The ASGI app, forwarding through one shared ``httpx.AsyncClient`` whose base URL
    is the UI's internal address."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the UI opens no websockets
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        async with contextlib.AsyncExitStack() as upstream_responses:
            response = await self._answer(Request(scope, receive), upstream_responses)
            await response(scope, receive, send)

    async def _answer(self, request: Request, closing: contextlib.AsyncExitStack) -> Response:
        method, raw_path = request.method, request.scope["raw_path"]
        if not allows(method, raw_path.decode("latin-1")):
            log.warning("temporal ui write refused",
                        extra={"method": method, "path": request.url.path})
            return _error(403, PERMISSION_DENIED, REFUSAL.format(method=method,
                                                                 path=request.url.path))
        body = None
        if method not in READ_METHODS:
            body = await _bounded(request.stream(), MAX_QUERY_BODY)
            if body is None:
                return _error(413, INVALID_ARGUMENT, "query arguments too large")
        query = request.scope["query_string"]
        target = self.http.base_url.copy_with(raw_path=raw_path + b"?" + query if query
                                              else raw_path)
        settings = method == "GET" and raw_path == SETTINGS_PATH
        headers = [(k, v) for k, v in request.headers.items() if k not in NOT_FORWARDED]
        # The body passes through as the UI encodes it, so only in an encoding the browser
        # accepts; the settings are read plain, to be rewritten.
        encoding = request.headers.get("accept-encoding", "identity")
        headers.append(("accept-encoding", "identity" if settings else encoding))
        try:
            upstream = await self.http.send(
                self.http.build_request(method, target, headers=headers, content=body),
                stream=True)
        except httpx.HTTPError as exc:
            return _error(502, UNAVAILABLE, f"Temporal UI unreachable ({type(exc).__name__})")
        closing.push_async_callback(upstream.aclose)
        if settings:
            return await _rewritten_settings(upstream)
        response = StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code)
        # Raw bytes pass through, so their length and encoding stay as the UI sent them.
        for key, value in _forwarded(upstream.headers, drop=RESPONSE_NOT_FORWARDED):
            response.headers.append(key, value)
        return response


@contextlib.asynccontextmanager
async def serving_read_only_ui(upstream: str, *, host: str = "127.0.0.1",
                               port: int = 0) -> AsyncIterator[str]:
    """Serve the UI at ``upstream`` read-only on ``host:port``; yields the public URL."""
    # A jar that keeps nothing: each browser's cookies (the UI's CSRF token) travel in its
    # own requests only, never into another's through the shared client.
    no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    async with httpx.AsyncClient(base_url=upstream, timeout=UPSTREAM_TIMEOUT,
                                 follow_redirects=False, cookies=no_cookies) as http:
        async with serving(ReadOnlyUIProxy(http), host=host, port=port) as url:
            yield url
