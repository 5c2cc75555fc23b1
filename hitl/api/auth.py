"""Who is acting: a reviewer token (API) or a browser session (review page).

Reviewer actions reach the workflow signed with the reviewer's own key, derived
from their token (``hitl.proofs``); the workflow verifies the proof and
authorizes (role, self-approval, four-eyes). So this module must get the name
and the key right: both come from a token checked against the registry's
hashes, never from a request body. A session keeps the derived key in this
process's memory only, and ends when the reviewer's token is rotated.

- ``Authorization: Bearer <token>``: the token is hashed and looked up on every
  request; no CSRF check is needed, since browsers never attach it on their own.
- The page trades a token for a session once (``POST /api/session``): a random
  session ID in an HttpOnly, SameSite=Strict cookie, and a per-session CSRF
  token the page sends as ``X-CSRF-Token`` on every POST and DELETE. Sessions
  live in this process's memory: a restart signs reviewers out, and several API
  replicas need sticky sessions. The reviewer is re-read on every request, so
  disabling one ends their sessions at once.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine

from hitl.api.deps import Services, get_services
from hitl.api.models import LoginBody, SessionInfo
from hitl.enums import RiskLevel
from hitl.proofs import signing_key
from hitl.reviewers import Reviewer, authenticate, get_reviewer
from hitl.store import session_scope

SESSION_COOKIE = "hitl_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL = timedelta(hours=12)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

bearer = HTTPBearer(auto_error=False, description="A reviewer token (`hitl reviewers add`).")
session_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False,
                              description="The review page's session; POST and DELETE "
                                          f"also need the {CSRF_HEADER} header.")


@dataclass(frozen=True)
class Principal:
    """The authenticated reviewer, with the key their actions are signed with."""

    name: str
    risks: tuple[RiskLevel, ...]
    key: Ed25519PrivateKey = field(repr=False, compare=False)


@dataclass(frozen=True)
class WebSession:
    reviewer: str
    csrf_token: str
    expires_at: datetime
    key: Ed25519PrivateKey = field(repr=False)
    verify_key: str  # the registry's key when signed in: a rotation ends the session


class SessionStore:
    """Browser sessions in memory, expiring ``ttl`` after login."""

    def __init__(self, *, ttl: timedelta = SESSION_TTL,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._ttl, self._clock = ttl, clock
        self._sessions: dict[str, WebSession] = {}
        self._lock = threading.Lock()

    def create(self, reviewer: str, *, key: Ed25519PrivateKey,
               verify_key: str) -> tuple[str, WebSession]:
        session_id = secrets.token_urlsafe(32)
        session = WebSession(reviewer=reviewer, csrf_token=secrets.token_urlsafe(32),
                             expires_at=self._clock() + self._ttl, key=key,
                             verify_key=verify_key)
        with self._lock:
            now = self._clock()
            self._sessions = {k: v for k, v in self._sessions.items() if v.expires_at > now}
            self._sessions[session_id] = session
        return session_id, session

    def get(self, session_id: str) -> WebSession | None:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.expires_at <= self._clock():
                del self._sessions[session_id]
                return None
            return session

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail,
                         headers={"WWW-Authenticate": "Bearer"})


def _principal(reviewer: Reviewer, key: Ed25519PrivateKey) -> Principal:
    return Principal(name=reviewer.name, key=key,
                     risks=tuple(sorted(reviewer.risk_levels, key=lambda r: r.rank)))


def _by_token(engine: Engine, token: str) -> Reviewer | None:
    with session_scope(engine) as session:
        return authenticate(session=session, token=token)


def _active(engine: Engine, name: str) -> Reviewer | None:
    with session_scope(engine) as session:
        reviewer = get_reviewer(session=session, name=name)
    return (reviewer if reviewer is not None and reviewer.active and not reviewer.expired()
            else None)


async def current_reviewer(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    session_id: Annotated[str | None, Depends(session_cookie)],
) -> Principal:
    """The reviewer behind this request; 401 if none, 403 on a missing CSRF token."""
    if credentials is not None:
        reviewer = await asyncio.to_thread(_by_token, services.engine, credentials.credentials)
        if reviewer is None:
            raise _unauthorized("invalid, disabled or expired reviewer token")
        return _principal(reviewer, signing_key(credentials.credentials))
    # HTTPBearer reads "Bearer " with no token as no header at all; it is a wrong token,
    # refused like any other rather than passed over for the session cookie.
    scheme = request.headers.get("Authorization", "").strip().partition(" ")[0]
    if scheme.lower() == "bearer":
        raise _unauthorized("empty reviewer token")
    session = services.sessions.get(session_id) if session_id else None
    if session is None:
        raise _unauthorized("sign in: send Authorization: Bearer <reviewer token>")
    if request.method not in SAFE_METHODS and not hmac.compare_digest(
            request.headers.get(CSRF_HEADER, ""), session.csrf_token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"missing or wrong {CSRF_HEADER}")
    reviewer = await asyncio.to_thread(_active, services.engine, session.reviewer)
    if reviewer is None or reviewer.verify_key != session.verify_key:
        services.sessions.drop(session_id or "")
        raise _unauthorized("reviewer disabled, expired, removed or issued a new token; "
                            "sign in again")
    return _principal(reviewer, session.key)


CurrentReviewer = Annotated[Principal, Depends(current_reviewer)]

router = APIRouter(prefix="/api/session", tags=["session"])


def _info(principal: Principal, session: WebSession) -> SessionInfo:
    return SessionInfo(reviewer=principal.name, risks=list(principal.risks),
                       csrf_token=session.csrf_token, expires_at=session.expires_at)


@router.post("", response_model=SessionInfo,
             responses={400: {"description": "the body is not UTF-8 JSON"}, 401: {}, 403: {}})
async def sign_in(body: LoginBody, request: Request, response: Response,
                  services: Annotated[Services, Depends(get_services)]) -> SessionInfo:
    """Trade a reviewer token for a session cookie (the review page's login)."""
    # Login CSRF: a cross-site page must not sign a browser in as someone else.
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site sign-in refused")
    reviewer = await asyncio.to_thread(_by_token, services.engine, body.token)
    if reviewer is None or reviewer.verify_key is None:
        raise _unauthorized("invalid, disabled or expired reviewer token")
    session_id, session = services.sessions.create(
        reviewer.name, key=signing_key(body.token), verify_key=reviewer.verify_key)
    response.set_cookie(
        SESSION_COOKIE, session_id, max_age=int(SESSION_TTL.total_seconds()), path="/",
        httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return _info(_principal(reviewer, session.key), session)


@router.get("", response_model=SessionInfo, responses={401: {}})
async def whoami(principal: CurrentReviewer,
                 services: Annotated[Services, Depends(get_services)],
                 session_id: Annotated[str | None, Depends(session_cookie)]) -> SessionInfo:
    """The signed-in reviewer and the CSRF token (for a page reload)."""
    session = services.sessions.get(session_id) if session_id else None
    if session is None:  # authenticated by bearer token: there is no session
        raise _unauthorized("no session")
    return _info(principal, session)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT, responses={401: {}, 403: {}})
async def sign_out(principal: CurrentReviewer, response: Response,
                   services: Annotated[Services, Depends(get_services)],
                   session_id: Annotated[str | None, Depends(session_cookie)]) -> None:
    if session_id:
        services.sessions.drop(session_id)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
