"""Reviewers: who may decide what, and how they prove who they are.

Tokens are stored only as SHA-256 digests (they are random 32-byte secrets, so
a slow KDF buys nothing); the plain token is shown once, at creation. Roles are
the risk levels a reviewer may decide. The workflow checks the reviewer named
in every signal or update against this table through a local activity, so a
role change applies to decisions already waiting, and the answer is recorded
in history for replay.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, select

from hitl.enums import RiskLevel
from hitl.errors import InputError
from hitl.store import utcnow

TOKEN_PREFIX = "hitl_"


class Reviewer(SQLModel, table=True):
    __tablename__ = "reviewers"

    name: str = Field(primary_key=True, max_length=200)
    token_sha256: str = Field(index=True, unique=True, max_length=64)
    risks: str = Field(max_length=100, description="comma-separated risk levels")
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def risk_levels(self) -> set[RiskLevel]:
        return {RiskLevel(value) for value in self.risks.split(",") if value}

    def may_decide(self, risk: RiskLevel) -> bool:
        return self.active and risk in self.risk_levels


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


def add_reviewer(*, session: Session, name: str, risks: list[RiskLevel]) -> tuple[Reviewer, str]:
    """Create a reviewer; returns it with its token, which is not stored in clear."""
    if not name.strip() or name != name.strip():
        raise InputError("name: must be non-empty without surrounding spaces", field="name")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    reviewer = Reviewer(name=name, token_sha256=hash_token(token),
                        risks=",".join(level.value for level in risks))
    session.add(reviewer)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise InputError(f"name: reviewer {name!r} already exists", field="name") from None
    session.refresh(reviewer)
    return reviewer, token


def get_reviewer(*, session: Session, name: str) -> Reviewer | None:
    return session.get(Reviewer, name)


def authenticate(*, session: Session, token: str) -> Reviewer | None:
    """The active reviewer holding ``token``, or None."""
    reviewer = session.exec(
        select(Reviewer).where(Reviewer.token_sha256 == hash_token(token))).first()
    return reviewer if reviewer is not None and reviewer.active else None


def list_reviewers(*, session: Session) -> list[Reviewer]:
    return list(session.exec(select(Reviewer).order_by(Reviewer.name)).all())


def set_active(*, session: Session, name: str, active: bool) -> Reviewer:
    reviewer = session.get(Reviewer, name)
    if reviewer is None:
        raise InputError(f"name: no reviewer {name!r}", field="name")
    reviewer.active = active
    session.commit()
    session.refresh(reviewer)
    return reviewer
