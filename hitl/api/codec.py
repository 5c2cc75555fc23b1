"""The codec server: Temporal's remote codec protocol, so the Temporal UI shows decrypted payloads.

With ``HITL_CODEC_KEYS`` set the Temporal server holds only ciphertext, and so
does the Temporal UI's view of it. The UI (or ``temporal --codec-endpoint``) posts
payloads here and renders what comes back: ``POST /codec/decode`` and
``/codec/encode``, body ``{"payloads": [...]}`` in proto-JSON form (metadata
values and data base64), header ``X-Namespace``.

Who may read: an enabled reviewer, by ``Authorization: Bearer <reviewer token>``
(``temporal --codec-auth``) or by the review page's session cookie. Reviewers
already read every decision's content on the review page, so decoding in the UI
shows them nothing new, and disabling a reviewer takes the UI away with the page.
A separate operator token would be one more long-lived secret to hand out and
rotate, and the Temporal UI cannot send one anyway: it sends only its own OIDC
token or the browser's cookies. The cookie is ``SameSite=Strict``, so it reaches
this server from the UI when both are on the same site (``127.0.0.1:8233`` and
``127.0.0.1:8000`` are); turn on "Include cross-origin credentials" in the UI's
codec settings. Decoding changes nothing, so no CSRF token is asked for; a page
on another origin cannot read the answer, because CORS answers only the
configured UI origins, and the cookie does not travel cross-site.

CORS is handled here rather than by an app-wide middleware so the rest of the
API stays same-origin only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, BeforeValidator, Field, PlainSerializer
from sqlalchemy.engine import Engine
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from hitl.api.auth import bearer, session_cookie
from hitl.api.deps import Services, get_services, validation_error_response
from hitl.codec import CodecError, EncryptionCodec
from hitl.errors import InputError
from hitl.reviewers import authenticate, get_reviewer
from hitl.store import session_scope

ORIGINS_SETTING = "HITL_CODEC_CORS_ORIGINS"
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
PREFLIGHT_MAX_AGE = "600"
MAX_PAYLOADS = 1000

log = logging.getLogger("hitl.api.codec")


def parse_origins(text: str | None) -> list[str]:
    """``HITL_CODEC_CORS_ORIGINS``: comma-separated ``scheme://host[:port]`` origins."""
    origins: list[str] = []
    for item in (part.strip() for part in (text or "").split(",")):
        if not item:
            continue
        parts = urlsplit(item)
        if (parts.scheme not in ("http", "https") or not parts.hostname
                or parts.path or parts.query or parts.fragment or parts.username):
            raise InputError(f"{ORIGINS_SETTING}: {item!r} is not an origin "
                             "(scheme://host[:port], no path)", field="codec_cors_origins")
        origins.append(item.lower())
    return origins


def _from_base64(value: object) -> object:
    # Proto-JSON bytes: standard or URL-safe alphabet, padding optional.
    if not isinstance(value, str):
        return value
    normalized = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(normalized + "=" * (-len(normalized) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64") from None


def _to_base64(value: bytes) -> str:
    return base64.b64encode(value).decode()


ProtoBytes = Annotated[bytes, BeforeValidator(_from_base64),
                       PlainSerializer(_to_base64, return_type=str)]


class JsonPayload(BaseModel):
    """One ``temporal.api.common.v1.Payload`` in proto-JSON form."""

    metadata: dict[str, ProtoBytes] = Field(default_factory=dict)
    data: ProtoBytes = b""

    @classmethod
    def of(cls, payload: Payload) -> JsonPayload:
        return cls(metadata=dict(payload.metadata), data=payload.data)

    def proto(self) -> Payload:
        return Payload(metadata=self.metadata, data=self.data)


class CodecPayloads(BaseModel):
    """The remote codec protocol's body, both ways."""

    payloads: list[JsonPayload] = Field(max_length=MAX_PAYLOADS)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail,
                         headers={"WWW-Authenticate": "Bearer"})


def _reviewer_by_token(engine: Engine, token: str) -> str | None:
    with session_scope(engine) as session:
        reviewer = authenticate(session=session, token=token)
        return reviewer.name if reviewer is not None else None


def _active_reviewer(engine: Engine, name: str) -> str | None:
    with session_scope(engine) as session:
        reviewer = get_reviewer(session=session, name=name)
        return reviewer.name if reviewer is not None and reviewer.active else None


async def codec_reader(
    services: Annotated[Services, Depends(get_services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    session_id: Annotated[str | None, Depends(session_cookie)],
    namespace: Annotated[str | None, Header(alias="X-Namespace")] = None,
) -> str:
    """The enabled reviewer behind this request: 401 if none; 403 for another namespace,
    so the keys are no decryption service for payloads hitl did not write."""
    name: str | None = None
    if credentials is not None:
        name = await asyncio.to_thread(_reviewer_by_token, services.engine,
                                       credentials.credentials)
        if name is None:
            raise _unauthorized("invalid or disabled reviewer token")
    elif session_id and (session := services.sessions.get(session_id)) is not None:
        name = await asyncio.to_thread(_active_reviewer, services.engine, session.reviewer)
    if name is None:
        raise _unauthorized("send Authorization: Bearer <reviewer token>, or sign in to the "
                            "review page and let the UI include credentials")
    served = services.hitl.temporal.namespace
    if namespace and namespace != served:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"this codec server serves namespace {served!r}, not {namespace!r}")
    return name


CodecReader = Annotated[str, Depends(codec_reader)]


def _cors_headers(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin"}


def codec_router(codec: PayloadCodec, *, cors_origins: Sequence[str] = ()) -> APIRouter:
    """``/codec/encode`` and ``/codec/decode`` over ``codec``, answering CORS for
    ``cors_origins`` (see ``parse_origins``) and no other origin."""
    allowed = frozenset(origin.lower() for origin in cors_origins)

    class CorsRoute(APIRoute):
        """Adds CORS headers to every answer, refusals included, so the UI can tell
        'sign in' from 'unreachable'."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def with_cors(request: Request) -> Response:
                try:
                    response = await handler(request)
                except HTTPException as exc:
                    response = await http_exception_handler(request, exc)
                except RequestValidationError as exc:
                    response = validation_error_response(exc)
                origin = (request.headers.get("origin") or "").lower()
                if origin in allowed:
                    response.headers.update(_cors_headers(origin))
                return response

            return with_cors

    router = APIRouter(prefix="/codec", tags=["codec"], route_class=CorsRoute)

    async def preflight(request: Request) -> Response:
        origin = (request.headers.get("origin") or "").lower()
        method = request.headers.get("access-control-request-method", "POST").upper()
        if origin not in allowed or method != "POST":
            return Response(status_code=status.HTTP_403_FORBIDDEN)
        return Response(status_code=status.HTTP_204_NO_CONTENT, headers={
            **_cors_headers(origin), "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE})

    for path in ("/encode", "/decode"):
        router.add_api_route(path, preflight, methods=["OPTIONS"], include_in_schema=False)

    @router.post("/decode", response_model=CodecPayloads,
                 responses={401: {}, 403: {}, 422: {}})
    async def decode(body: CodecPayloads, reader: CodecReader) -> CodecPayloads:
        """Decrypt payloads (what the Temporal UI calls to show history)."""
        decoded: list[JsonPayload] = []
        for index, payload in enumerate(body.payloads):
            try:
                # Shown as they are, payloads in clear included: showing is not acting on
                # them, which the workers' codec refuses (hitl.codec).
                [plain] = ([codec.decrypt(payload.proto())] if isinstance(codec, EncryptionCodec)
                           else await codec.decode([payload.proto()]))
            except CodecError as exc:
                raise HTTPException(422, f"payloads.{index}: {exc}") from exc
            decoded.append(JsonPayload.of(plain))
        log.info("codec decode", extra={"reviewer": reader, "payloads": len(decoded)})
        return CodecPayloads(payloads=decoded)

    @router.post("/encode", response_model=CodecPayloads, responses={401: {}, 403: {}})
    async def encode(body: CodecPayloads, reader: CodecReader) -> CodecPayloads:
        """Encrypt payloads (the UI's input when it starts or signals a workflow)."""
        encoded = await codec.encode([payload.proto() for payload in body.payloads])
        log.info("codec encode", extra={"reviewer": reader, "payloads": len(encoded)})
        return CodecPayloads(payloads=[JsonPayload.of(payload) for payload in encoded])

    return router
