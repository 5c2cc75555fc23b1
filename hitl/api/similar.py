"""Past decisions like this one, with what people said about them.

The choice: among the most recent ``POOL`` finished decisions of the same task
type that a person decided (an accepted review in ``reviews``, the final record
in ``decisions``), rank by token overlap of the model's output (Jaccard over
lower-cased word tokens), then by nearest confidence. For label-like outputs
("billing") the overlap is all-or-nothing, so this reads "the last times the
model said the same thing at about this confidence, and what the human did";
for prose it favours outputs about the same things. No embeddings: nothing to
download, deterministic, and cheap (one indexed query, a few hundred rows).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from hitl.api.models import SimilarDecision
from hitl.store import DecisionRecord, ReviewRow, session_scope

POOL = 300
TOKEN = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")


def tokens(text: str) -> frozenset[str]:
    return frozenset(TOKEN.findall(text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


@dataclass
class _Past:
    record: DecisionRecord
    reviews: list[ReviewRow] = field(default_factory=list)


def similar_decisions(*, engine: Engine, decision_id: str, task_type: str, confidence: float,
                      output: str, limit: int = 5) -> list[SimilarDecision]:
    """Up to ``limit`` past human-decided decisions most like this one."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(ReviewRow, DecisionRecord)
            .join(DecisionRecord, col(DecisionRecord.decision_id) == col(ReviewRow.decision_id))
            .where(ReviewRow.task_type == task_type, col(ReviewRow.accepted).is_(True),
                   ReviewRow.decision_id != decision_id)
            .order_by(col(ReviewRow.reviewed_at).desc())
            .limit(POOL)).all()
    pasts: dict[str, _Past] = {}
    for review, record in rows:
        pasts.setdefault(record.decision_id, _Past(record)).reviews.append(review)
    mine = tokens(output)
    scored = []
    for past in pasts.values():
        their_output = _output(past.record)
        score = jaccard(mine, tokens(their_output))
        scored.append((-round(score, 3), abs(past.record.confidence - confidence),
                       _similar(past, their_output, score)))
    scored.sort(key=lambda entry: entry[:2])
    return [entry[2] for entry in scored[:limit]]


def _output(record: DecisionRecord) -> str:
    try:
        return str(json.loads(record.request_json).get("output", ""))
    except (ValueError, AttributeError):
        return ""


def _similar(past: _Past, output: str, score: float) -> SimilarDecision:
    reviews = sorted(past.reviews, key=lambda r: r.reviewed_at)
    rejects = [r for r in reviews if r.verdict == "reject"]
    deciding = rejects[0] if rejects else reviews[-1]  # one rejection vetoes
    reviewed_at: datetime = deciding.reviewed_at
    return SimilarDecision(
        decision_id=past.record.decision_id, similarity=round(score, 3),
        confidence=past.record.confidence, output=output[:2000], status=past.record.status,
        verdict=deciding.verdict,
        reviewers=[r.reviewer for r in (rejects[:1] if rejects else reviews)],
        reason=deciding.reason, correct_answer=deciding.correct_answer,
        error_category=deciding.error_category,
        edited=any(r.edited for r in reviews), reviewed_at=reviewed_at)
