"""Verdict proofs (hitl.proofs) and the registry's answer (activities/reviewers.py).

Every field of an action is bound by its proof: changing any one after signing, or
presenting it for another decision or verdict, fails. The registry's answer is tested
as the worker gives it, from real rows in a real store.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from activities.reviewers import ReviewerActivities
from hitl import proofs
from hitl.enums import RefusalCode, RiskLevel, Verdict
from hitl.payloads import AuthorizeInput
from hitl.request import Action
from hitl.review import ApproveInput, RejectInput
from hitl.reviewers import add_reviewer, authenticate, get_reviewer, rotate_token, set_active
from tests.reviewing import token_for

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)
DIGEST = "a" * 64
TOKEN = token_for("prover")


def signed(**changes: object) -> ApproveInput:
    review = ApproveInput(reviewer="prover", reason="ok", request_id="r1",
                          content_sha256=DIGEST, **changes)  # type: ignore[arg-type]
    return proofs.sign(review, decision_id="d1", verdict=Verdict.APPROVE, token=TOKEN, now=NOW)


def check(review: ApproveInput | RejectInput, *, decision_id: str = "d1",
          verdict: Verdict = Verdict.APPROVE, now: datetime = NOW,
          token: str = TOKEN) -> str | None:
    return proofs.check(review, decision_id=decision_id, verdict=verdict,
                        verify_key_hex=proofs.verify_key(token), now=now)


def test_a_signed_action_verifies() -> None:
    assert check(signed()) is None


@pytest.mark.parametrize("change", [
    {"reviewer": "prover2"}, {"reason": "ok!"}, {"request_id": "r2"},
    {"content_sha256": "b" * 64}, {"output": "edited"}, {"flag_for_monitoring": True},
    {"time_on_page_seconds": 1.5},
    {"action": Action(type="refund", params={"amount": 1})},
])
def test_changing_any_field_after_signing_fails(change: dict[str, object]) -> None:
    review = signed()
    forged = review.model_copy(update=change)
    assert check(forged) == ("proof does not verify: it was not signed by this reviewer for "
                             "this decision, verdict and content")


def test_a_proof_holds_for_one_decision_one_verdict_one_key() -> None:
    review = signed()
    assert check(review, decision_id="d2") is not None
    assert check(review, verdict=Verdict.REJECT) is not None
    rejection = RejectInput.model_validate(review.model_dump(
        exclude={"output", "action", "flag_for_monitoring"}))
    assert check(rejection, verdict=Verdict.REJECT) is not None
    assert "current key" in (check(review, token=token_for("someone-else")) or "")


def test_expiry_and_lifetime_are_enforced() -> None:
    review = signed()
    assert check(review, now=NOW + proofs.DEFAULT_LIFETIME + proofs.CLOCK_SKEW
                 + timedelta(seconds=1)) is not None
    assert check(review, now=NOW + proofs.DEFAULT_LIFETIME) is None
    long = proofs.sign(ApproveInput(reviewer="prover", content_sha256=DIGEST),
                       decision_id="d1", verdict=Verdict.APPROVE, token=TOKEN, now=NOW,
                       lifetime=timedelta(days=3))
    assert "longer than" in (check(long) or "")
    assert "no proof" in (check(ApproveInput(reviewer="prover", content_sha256=DIGEST)) or "")


# ------------------------------------------------------------------ the registry

def registry(engine: Engine) -> ReviewerActivities:
    with Session(engine) as session:
        add_reviewer(session=session, name="prover", risks=[RiskLevel.LOW, RiskLevel.MEDIUM],
                     token=TOKEN)
    return ReviewerActivities(engine=engine)


def answer(engine: Engine, activities: ReviewerActivities, review: ApproveInput,
           risk: RiskLevel = RiskLevel.LOW, now: datetime = NOW) -> tuple[bool, str | None]:
    with Session(engine) as session:
        row = get_reviewer(session=session, name=review.reviewer)
    result = activities.judge(row, AuthorizeInput(reviewer=review.reviewer, risk=risk,
                                                  decision_id="d1", approval=review), now=now)
    return result.allowed, result.reason


def test_the_registry_verifies_then_checks_the_role(engine: Engine) -> None:
    activities = registry(engine)
    assert answer(engine, activities, signed()) == (True, None)
    # Looked up by identity: a respelling of the name finds the same reviewer and key,
    # but the proof covers the name as sent, so it must be signed as sent.
    respelled = proofs.sign(ApproveInput(reviewer="PROVER", content_sha256=DIGEST),
                            decision_id="d1", verdict=Verdict.APPROVE, token=TOKEN, now=NOW)
    assert answer(engine, activities, respelled) == (True, None)
    allowed, reason = answer(engine, activities, signed(), risk=RiskLevel.HIGH)
    assert not allowed and "may not decide high-risk" in (reason or "")
    unsigned = ApproveInput(reviewer="prover", content_sha256=DIGEST)
    allowed, reason = answer(engine, activities, unsigned)
    assert not allowed and "no proof" in (reason or "")


def test_rotation_retires_the_old_key_and_disable_stops_at_once(engine: Engine) -> None:
    activities = registry(engine)
    old = signed()
    with Session(engine) as session:
        _, new_token = rotate_token(session=session, name="prover")
        assert authenticate(session=session, token=TOKEN) is None
        assert authenticate(session=session, token=new_token) is not None
    allowed, reason = answer(engine, activities, old)
    assert not allowed and "current key" in (reason or "")
    fresh = proofs.sign(ApproveInput(reviewer="prover", content_sha256=DIGEST),
                        decision_id="d1", verdict=Verdict.APPROVE, token=new_token, now=NOW)
    assert answer(engine, activities, fresh) == (True, None)
    with Session(engine) as session:
        set_active(session=session, name="prover", active=False)
    allowed, reason = answer(engine, activities, fresh)
    assert not allowed and "disabled" in (reason or "")


def test_an_expired_token_signs_nothing_and_signs_in_nowhere(engine: Engine) -> None:
    with Session(engine) as session:
        reviewer, token = add_reviewer(session=session, name="brief", risks=[RiskLevel.LOW],
                                       lifetime=timedelta(seconds=60))
        assert reviewer.token_expires_at is not None
        assert authenticate(session=session, token=token) is not None
    activities = ReviewerActivities(engine=engine)
    later = datetime.now(UTC) + timedelta(minutes=2)
    review = proofs.sign(ApproveInput(reviewer="brief", content_sha256=DIGEST),
                         decision_id="d1", verdict=Verdict.APPROVE, token=token, now=later)
    allowed, reason = answer(engine, activities, review, now=later)
    assert not allowed and "expired" in (reason or "") and "rotate brief" in (reason or "")


def test_proofs_off_trusts_the_name_but_not_the_role(engine: Engine) -> None:
    registry(engine)
    trusting = ReviewerActivities(engine=engine, require_proofs=False)
    unsigned = ApproveInput(reviewer="prover", content_sha256=DIGEST)
    assert answer(engine, trusting, unsigned) == (True, None)
    allowed, _ = answer(engine, trusting, unsigned, risk=RiskLevel.CRITICAL)
    assert not allowed
    assert answer(engine, trusting, ApproveInput(reviewer="nobody", content_sha256=DIGEST)
                  )[0] is False


def test_a_token_from_before_proofs_gets_its_key_at_sign_in(engine: Engine) -> None:
    with Session(engine) as session:
        reviewer, token = add_reviewer(session=session, name="elder", risks=[RiskLevel.LOW])
        reviewer.verify_key = None  # as migration 0006 leaves an existing reviewer
        session.add(reviewer)
        session.commit()
    activities = ReviewerActivities(engine=engine)
    review = proofs.sign(ApproveInput(reviewer="elder", content_sha256=DIGEST),
                         decision_id="d1", verdict=Verdict.APPROVE, token=token, now=NOW)
    allowed, reason = answer(engine, activities, review)
    assert not allowed and "no verification key" in (reason or "")
    with Session(engine) as session:
        assert authenticate(session=session, token=token) is not None
    assert answer(engine, activities, review) == (True, None)


def test_the_code_of_each_refusal() -> None:
    assert RefusalCode.CONTENT_CHANGED.is_conflict and not RefusalCode.UNPROVEN.is_conflict
