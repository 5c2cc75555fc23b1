"""Reviewers: who may decide what, and how they prove who they are.

A reviewer's one secret is their token, shown once at creation or rotation. The
registry keeps its SHA-256 digest (random 32-byte secrets: a slow KDF buys
nothing), which authenticates API calls, and the Ed25519 public key derived
from it (``hitl.proofs``), which verifies the proofs on their verdicts. Tokens
expire after the policy's ``review.token_lifetime``; rotating issues a new one
and retires the old token and key at once.

Names are identities (``hitl.identity``): registered in NFKC, case-folded form,
refused with invisible characters or mixed scripts, unique by ``identity_key``
(so ``Carol`` and a Cyrillic look-alike of ``carol`` cannot both be reviewers)
and looked up by it. Roles are the risk levels a reviewer may decide. The
workflow checks every action against this table through a local activity, so
a role change applies to decisions already waiting, and the answer is
recorded in history for replay.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, select

from hitl.enums import RiskLevel
from hitl.errors import InputError
from hitl.identity import identity_key, registered_name
from hitl.proofs import verify_key
from hitl.store import utcnow

TOKEN_PREFIX = "hitl_"


class Reviewer(SQLModel, table=True):
    __tablename__ = "reviewers"

    name: str = Field(primary_key=True, max_length=200)
    token_sha256: str = Field(index=True, unique=True, max_length=64)
    risks: str = Field(max_length=100, description="comma-separated risk levels")
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    # What names are compared by (hitl.identity); unique among reviewers by add_reviewer.
    name_key: str | None = Field(default=None, index=True, max_length=200)
    # The Ed25519 public key (hex) derived from the token; None for a token issued
    # before proofs until its first sign-in (authenticate fills it in).
    verify_key: str | None = Field(default=None, max_length=64)
    token_expires_at: datetime | None = None  # None: the token does not expire

    @property
    def risk_levels(self) -> set[RiskLevel]:
        return {RiskLevel(value) for value in self.risks.split(",") if value}

    def may_decide(self, risk: RiskLevel) -> bool:
        return self.active and risk in self.risk_levels

    def expired(self, now: datetime | None = None) -> bool:
        expires = self.token_expires_at
        if expires is None:
            return False
        if expires.tzinfo is None:  # SQLite hands datetimes back naive
            expires = expires.replace(tzinfo=UTC)
        return expires <= (now or datetime.now(UTC))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_risks(text: str) -> list[RiskLevel]:
    """``low,medium`` or ``all``; errors name the bad level."""
    if text.strip() == "all":
        return list(RiskLevel)
    levels = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            levels.append(RiskLevel(part))
        except ValueError:
            allowed = ", ".join(level.value for level in RiskLevel)
            raise InputError(f"risks: unknown risk level {part!r} (use {allowed} or all)",
                             field="risks") from None
    if not levels:
        raise InputError("risks: at least one risk level is required", field="risks")
    return levels


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _issue(reviewer: Reviewer, token: str, lifetime: timedelta | None) -> None:
    reviewer.token_sha256 = hash_token(token)
    reviewer.verify_key = verify_key(token)
    reviewer.token_expires_at = None if lifetime is None else (
        datetime.now(UTC) + lifetime).replace(microsecond=0)


def add_reviewer(*, session: Session, name: str, risks: list[RiskLevel],
                 lifetime: timedelta | None = None,
                 token: str | None = None) -> tuple[Reviewer, str]:
    """Create a reviewer; returns it with its token, which is not stored in clear.

    Args:
        name: checked and folded by ``hitl.identity.registered_name``.
        lifetime: how long the token is valid (the policy's ``review.token_lifetime``).
        token: a token to issue instead of a fresh random one (tests, migrations of
            an existing registry); at least 32 characters after ``TOKEN_PREFIX``.
    """
    folded = registered_name(name)
    key = identity_key(folded)
    clash = session.exec(select(Reviewer).where(Reviewer.name_key == key)).first()
    if clash is not None:
        raise InputError(f"name: reviewer {clash.name!r} already exists with a name that "
                         f"reads the same as {name!r}", field="name")
    if token is not None and (not token.startswith(TOKEN_PREFIX)
                              or len(token) < len(TOKEN_PREFIX) + 32):
        raise InputError(f"token: must start with {TOKEN_PREFIX} and hold 32 more "
                         "characters", field="token")
    token = token or new_token()
    reviewer = Reviewer(name=folded, name_key=key, token_sha256="",
                        risks=",".join(level.value for level in risks))
    _issue(reviewer, token, lifetime)
    session.add(reviewer)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise InputError(f"name: reviewer {folded!r} already exists", field="name") from None
    session.refresh(reviewer)
    return reviewer, token


def rotate_token(*, session: Session, name: str,
                 lifetime: timedelta | None = None) -> tuple[Reviewer, str]:
    """Issue ``name`` a new token (and signing key); the old ones stop working at once."""
    reviewer = get_reviewer(session=session, name=name)
    if reviewer is None:
        raise InputError(f"name: no reviewer {name!r}", field="name")
    token = new_token()
    _issue(reviewer, token, lifetime)
    session.add(reviewer)
    session.commit()
    session.refresh(reviewer)
    return reviewer, token


def get_reviewer(*, session: Session, name: str) -> Reviewer | None:
    """The reviewer ``name`` stands for (compared by identity key), or None when none
    or, in a registry from before identity keys, more than one does."""
    key = identity_key(name)
    if not key:
        return None
    rows = session.exec(select(Reviewer).where(Reviewer.name_key == key).limit(2)).all()
    return rows[0] if len(rows) == 1 else None


def authenticate(*, session: Session, token: str) -> Reviewer | None:
    """The active reviewer holding ``token``, unexpired, or None.

    A token issued before proofs has no public key on file yet: the token just
    matched its stored digest, so the key derived from it is the reviewer's, and it
    is stored now.
    """
    reviewer = session.exec(
        select(Reviewer).where(Reviewer.token_sha256 == hash_token(token))).first()
    if reviewer is None or not reviewer.active or reviewer.expired():
        return None
    if reviewer.verify_key is None:
        reviewer.verify_key = verify_key(token)
        session.add(reviewer)
        session.commit()
        session.refresh(reviewer)
    return reviewer


def list_reviewers(*, session: Session) -> list[Reviewer]:
    return list(session.exec(select(Reviewer).order_by(Reviewer.name)).all())


def set_active(*, session: Session, name: str, active: bool) -> Reviewer:
    reviewer = get_reviewer(session=session, name=name)
    if reviewer is None:
        raise InputError(f"name: no reviewer {name!r}", field="name")
    reviewer.active = active
    session.commit()
    session.refresh(reviewer)
    return reviewer
