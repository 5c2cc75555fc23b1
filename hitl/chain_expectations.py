"""What a decision's final record says its audit chain must hold, with no SQL.

The hash chain (``hitl.audit_chain``) shows rows edited, moved or deleted from
the middle, but not a chain deleted whole (rows and head) nor one cut back at
its end with the head moved back too. The ``decisions`` table is the second
witness: its ``state_json`` is the final ``DecisionState``, written after the
workflow's own writes, and lists every delivery and every review.

Only what is always written before that record counts as expected:

- each delivery: ``execute_action`` returns only once its ledger row
  (``executions``, one per phase) is committed, so a delivered phase without its
  row means the row was deleted;
- not the reviews. The review that released a delivery rides with the executor
  on the current path, but decisions started before that change, or under
  ``HITL_INACTIVE_PATCHES``, write it in the background like every other review,
  and a background write that still fails after its retries is logged ("review
  record not written"), not retried for ever. A listed review missing from the
  store is therefore reported as a gap to look into, not as a broken link.

Deleting the ``decisions`` row as well, or editing its state, is not caught
here: only a head digest kept outside the database (``--expect``) catches that.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, ValidationError

from hitl.audit_chain import EXECUTIONS, REVIEWS, BreakKind, ChainBreak, ChainHead, ChainRecord


class _Lenient(BaseModel):
    # Reads rows recorded by any version: only the fields checked here must be there.
    model_config = ConfigDict(extra="ignore")


class _Delivery(_Lenient):
    phase: str
    at: datetime


class _Review(_Lenient):
    request_id: str
    reviewer: str
    verdict: str
    accepted: bool = True


class RecordedTrail(_Lenient):
    """The parts of a stored ``DecisionState`` that name chain records."""

    deliveries: list[_Delivery] = []
    reviews: list[_Review] = []


class ChainGap(BaseModel):
    """A record the decision lists that the store does not hold, where its absence can
    also be a write that failed: reported, but not a broken link."""

    model_config = ConfigDict(frozen=True)

    decision_id: str
    table: str
    detail: str

    def describe(self) -> str:
        return f"{self.table} (decision {self.decision_id}): {self.detail}"


def check_against_record(*, decision_id: str, status: str, state_json: str,
                         records: Sequence[ChainRecord],
                         head: ChainHead | None) -> tuple[list[ChainBreak], list[ChainGap]]:
    """Breaks where the chain holds less than the decision's record guarantees, and
    gaps where it holds less than the record lists."""
    try:
        trail = RecordedTrail.model_validate_json(state_json)
    except ValidationError:
        return [ChainBreak(decision_id=decision_id, kind=BreakKind.EDITED, table="decisions",
                           detail="the decision record's state does not read as a decision's "
                                  "state: it was edited")], []
    executed = {str(r.content.get("phase")) for r in records if r.table == EXECUTIONS}
    missing = [d for d in _first_per_phase(trail.deliveries) if d.phase not in executed]
    breaks: list[ChainBreak] = []
    if missing and not records and head is None:
        phases = ", ".join(d.phase for d in missing)
        breaks.append(ChainBreak(
            decision_id=decision_id, kind=BreakKind.DELETED,
            detail=f"the decision is {status} with {_deliveries(len(missing))} "
                   f"({phases}), but the store holds no audit chain for it: its rows and "
                   "head were deleted"))
    else:
        breaks.extend(ChainBreak(
            decision_id=decision_id, kind=BreakKind.DELETED, table=EXECUTIONS,
            detail=f"the decision record lists a {d.phase} delivery at {d.at.isoformat()}, "
                   "but no executions row holds it: deleted, with the chain cut back to "
                   "before it") for d in missing)
    stored_reviews = {str(r.content.get("request_id")) for r in records if r.table == REVIEWS}
    gaps = [ChainGap(decision_id=decision_id, table=REVIEWS,
                     detail=f"review {r.request_id} ({r.verdict} by {r.reviewer}"
                            f"{'' if r.accepted else ', refused'}) is in the decision record "
                            "but not in the store: deleted, or its write failed (the worker "
                            "logs 'review record not written')")
            for r in trail.reviews if r.request_id not in stored_reviews]
    return breaks, gaps


def _first_per_phase(deliveries: list[_Delivery]) -> list[_Delivery]:
    """One delivery per phase: the ledger holds one row per (decision, phase)."""
    seen: dict[str, _Delivery] = {}
    for delivery in deliveries:
        seen.setdefault(delivery.phase, delivery)
    return list(seen.values())


def _deliveries(n: int) -> str:
    return "1 delivery" if n == 1 else f"{n} deliveries"
