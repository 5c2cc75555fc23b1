"""The reviewer state machine (hitl.approvals), without a server.

The property test drives it the way ``DecisionWorkflow`` does (actions in arrival
order, the registry's answer for each, an edit screened again and its editor asked
again for a higher risk) over random interleavings of approvals, edits, rejections,
refusals, forged proofs, stale digests and duplicates, and checks the invariant:

    an approval opens the gate only for content approved by the required number of
    distinct, authorized, proven reviewers, none of them the requester.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from hitl import approvals
from hitl.approvals import Ballot, ReviewBook
from hitl.content import Content
from hitl.enums import DecisionStatus, RefusalCode, RiskLevel, Verdict, Zone
from hitl.identity import identity_key
from hitl.payloads import AuthorizeResult
from hitl.request import Action
from hitl.review import ApproveInput, RejectInput, ReviewAck
from hitl.state import DecisionState

NOW = datetime(2026, 12, 4, tzinfo=UTC)
REQUESTER = "SVC-Billing"  # as the service spells it; registered as svc-billing
# Who may decide what; "mallory" is not registered; the requester is also a reviewer,
# and "SVC-Billing " is how they might spell themselves to slip past a string compare.
ROLES: dict[str, set[RiskLevel]] = {
    "alice": set(RiskLevel), "bob": set(RiskLevel), "carol": set(RiskLevel),
    "june": {RiskLevel.LOW, RiskLevel.MEDIUM}, "svc-billing": set(RiskLevel),
}
NAMES = [*ROLES, "mallory", "SVC-Billing ", "Alice", "bob\u200b"]
AMOUNTS = [0, 50, 20_000]  # low, medium, critical for a refund


def risk_of(amount: float, floor: RiskLevel) -> RiskLevel:
    risk = RiskLevel.CRITICAL if amount > 10_000 else (
        RiskLevel.MEDIUM if amount > 0 else RiskLevel.LOW)
    return risk.at_least(floor)


def required(risk: RiskLevel) -> int:
    return 2 if risk is RiskLevel.CRITICAL else 1


def authorize(name: str, proven: bool, risk: RiskLevel) -> AuthorizeResult:
    """The registry's answer, as activities/reviewers.py gives it."""
    registered = next((r for r in ROLES if identity_key(r) == identity_key(name)), None)
    if registered is None:
        return AuthorizeResult(allowed=False, code=RefusalCode.UNPROVEN, reason="unknown")
    if not proven:
        return AuthorizeResult(allowed=False, code=RefusalCode.UNPROVEN, reason="bad proof")
    if risk not in ROLES[registered]:
        return AuthorizeResult(allowed=False, code=RefusalCode.FORBIDDEN, reason="role",
                               reviewer=registered, proven=True, risk=risk)
    return AuthorizeResult(allowed=True, reviewer=registered, proven=True, risk=risk)


def refund(amount: float) -> Action:
    return Action(type="refund", params={"amount": amount}, reversible=False)


@dataclass
class Gate:
    state: DecisionState
    book: ReviewBook
    proposal_required: int
    proven: dict[str, bool]  # request ID -> was it proven, as the registry said
    roles_at: dict[str, RiskLevel]  # request ID -> the risk its role was checked for


def open_gate(amount: float, blind: bool) -> Gate:
    risk = risk_of(amount, RiskLevel.LOW)
    state = DecisionState(decision_id="d1", task_type="refund_request", confidence=0.5,
                          reversible=False, submitted_at=NOW, zone=Zone.ESCALATE, risk=risk,
                          status=DecisionStatus.PENDING_REVIEW, blind_review=blind)
    book = ReviewBook(requester=REQUESTER)
    book.new_attempt(state, Content.of("refund it", refund(amount), risk=risk))
    state.approvals_required = max(2, required(risk)) if blind else required(risk)
    return Gate(state, book, state.approvals_required, {}, {})


def act(gate: Gate, *, verdict: Verdict, name: str, proven: bool, digest: str | None,
        request_id: str, edit_amount: float | None, stale_role: bool) -> ReviewAck:
    """One action through the state machine, as the workflow's _review_in_turn runs it."""
    state, book = gate.state, gate.book
    known = book.answered(request_id, name)
    if known is not None:
        return known
    data: ApproveInput | RejectInput
    if verdict is Verdict.APPROVE:
        data = ApproveInput(reviewer=name.strip() or "x", content_sha256=digest,
                            request_id=request_id,
                            action=refund(edit_amount) if edit_amount is not None else None)
    else:
        data = RejectInput(reviewer=name.strip() or "x", content_sha256=digest,
                           request_id=request_id, reason="no")
    ballot = Ballot(verdict=verdict, data=data, request_id=request_id, received_at=NOW)
    assert state.risk is not None
    # Authorized, perhaps, before an earlier edit raised the risk (a stale answer).
    checked = RiskLevel.LOW if stale_role else state.risk
    authorization = authorize(name, proven, checked)
    if approvals.needs_reauthorization(state, authorization):
        authorization = authorize(name, proven, state.risk)
    refused = approvals.refusal(state, book, ballot, authorization, stale=False)
    edited, need = None, state.approvals_required
    if refused is None and not state.blind_review:
        edited = approvals.edited_content(state, ballot, authorization.reviewer or "")
        if edited is not None:
            assert state.proposal is not None and state.proposal.risk is not None
            screened_risk = risk_of(edit_amount or 0, RiskLevel.LOW)
            edited, need = approvals.screened(
                edited, proposal_risk=state.proposal.risk,
                proposal_required=gate.proposal_required, risk=screened_risk,
                required=required(screened_risk), rule_failures=[])
            assert edited.risk is not None
            if edited.risk.rank > state.risk.rank:
                again = authorize(name, proven, edited.risk)
                if not again.allowed:
                    refused = (RefusalCode.FORBIDDEN, "edit raises risk")
                else:
                    authorization = again
    record = approvals.record_of(state, ballot, authorization, refused, attempt=0)
    if refused is not None:
        message = refused[1]
    elif edited is not None:
        message = approvals.take_edit(state, book, record, edited, need)
    else:
        message = approvals.take(state, book, record, ballot)
    approvals.keep(state, book, record)
    ack = ReviewAck(accepted=refused is None, status=state.status, message=message,
                    code=refused[0] if refused else None)
    if authorization.proven and authorization.reviewer:
        book.remember(request_id, authorization.reviewer, ack)
    if refused is None:
        gate.proven[record.request_id] = authorization.proven
        assert authorization.risk is not None
        gate.roles_at[record.request_id] = authorization.risk
    return ack


def assert_invariant(gate: Gate) -> None:
    state, book = gate.state, gate.book
    kept_refusals = [r for r in state.reviews if not r.accepted]
    assert len(kept_refusals) <= approvals.MAX_KEPT_REFUSALS
    assert state.refused >= len(kept_refusals)
    verdict = book.verdict
    if verdict is None or verdict.verdict is not Verdict.APPROVE:
        return
    final = book.approved
    assert final is not None and final.risk is not None
    # Approvals count from the moment the content was put up: the proposal at the start,
    # an edit at the edit that made it (an approval of the same content before an edit
    # replaced it, and another edit brought it back, does not carry over either).
    accepted = [r for r in state.reviews if r.accepted]
    since = max((i for i, r in enumerate(accepted) if r.edited), default=0)
    voters = [r for r in accepted[since:] if r.verdict is Verdict.APPROVE
              and r.content_sha256 == final.sha256]
    keys = {identity_key(r.reviewer) for r in voters}
    assert len(keys) == len(voters), "one reviewer counted twice"
    need = required(final.risk)
    if state.blind_review:
        need = max(2, need)
    assert len(keys) >= need, (len(keys), need, final.risk)
    assert identity_key(REQUESTER) not in keys
    for record in voters:
        registered = next(r for r in ROLES if identity_key(r) == identity_key(record.reviewer))
        assert gate.proven[record.request_id]
        assert final.risk in ROLES[registered]
        assert gate.roles_at[record.request_id].rank >= final.risk.rank
    if final.edited_by is not None:
        assert any(identity_key(r.reviewer) == identity_key(final.edited_by) and r.edited
                   for r in voters)


action_strategy = st.fixed_dictionaries({
    # Rejections end a run, so they are rarer; edits and registered names are common,
    # so runs reach the interleavings that matter (approve, edit, approve again).
    "verdict": st.sampled_from([Verdict.APPROVE] * 5 + [Verdict.REJECT]),
    "name": st.sampled_from([*ROLES, *ROLES, *NAMES]),
    "proven": st.sampled_from([True, True, True, False]),
    "digest": st.sampled_from(["current"] * 5 + ["first", "none", "bogus"]),
    "request_id": st.sampled_from([f"r{n}" for n in range(10)]),
    "edit_amount": st.sampled_from([None, None, 0, 50, 20_000, 99_999]),
    "stale_role": st.booleans(),
})


@settings(max_examples=600, deadline=None)
@given(amount=st.sampled_from(AMOUNTS), blind=st.booleans(),
       actions=st.lists(action_strategy, max_size=25))
def test_only_content_approved_by_enough_proven_reviewers_runs(
        amount: float, blind: bool, actions: list[dict[str, object]]) -> None:
    gate = open_gate(amount, blind)
    first = gate.state.proposal
    assert first is not None
    for spec in actions:
        if gate.book.decided:
            break
        current = gate.state.up_for_approval
        assert current is not None
        choice = spec["digest"]
        digest = {"current": current.sha256, "first": first.sha256, "none": None,
                  "bogus": "f" * 64}[str(choice)]
        edit = spec["edit_amount"]
        act(gate, verdict=spec["verdict"], name=str(spec["name"]),  # type: ignore[arg-type]
            proven=bool(spec["proven"]), digest=digest, request_id=str(spec["request_id"]),
            edit_amount=edit if spec["verdict"] is Verdict.APPROVE else None,  # type: ignore[arg-type]
            stale_role=bool(spec["stale_role"]))
        assert_invariant(gate)


# ------------------------------------------------------------ the attacks, one by one

def approve(gate: Gate, name: str, *, digest: str | None = None, edit: float | None = None,
            request_id: str | None = None, proven: bool = True) -> ReviewAck:
    current = gate.state.up_for_approval
    assert current is not None
    return act(gate, verdict=Verdict.APPROVE, name=name, proven=proven,
               digest=digest or current.sha256, request_id=request_id or f"{name}-{edit}",
               edit_amount=edit, stale_role=False)


def test_an_edit_after_one_approval_needs_its_own_approvals() -> None:
    """carol approves a critical refund, dave edits it: the edit does not execute on
    carol's approval of something else; it needs a second approver of the edit."""
    gate = open_gate(20_000, blind=False)
    assert "1 of 2" in approve(gate, "carol").message
    edited = approve(gate, "alice", edit=99_999)
    assert edited.accepted and "1 of 2" in edited.message and not gate.book.decided
    assert gate.state.approved_by == ["alice"]
    done = approve(gate, "carol", request_id="carol-again")
    assert done.accepted and gate.book.decided and gate.book.approved is not None
    assert gate.book.approved.action.params == {"amount": 99_999}


def test_approving_as_proposed_after_an_edit_is_a_conflict() -> None:
    gate = open_gate(20_000, blind=False)
    proposal = gate.state.proposal
    assert proposal is not None
    approve(gate, "alice", edit=15_000)
    stale = approve(gate, "carol", digest=proposal.sha256)
    assert not stale.accepted and stale.code is RefusalCode.CONTENT_CHANGED
    assert gate.state.approved_by == ["alice"] and not gate.book.decided


def test_an_edit_that_raises_the_risk_needs_the_role_and_the_approvers_of_the_new_risk() -> None:
    """june (low, medium) edits a medium refund to a critical amount: refused, nothing
    changes; alice's edit to the same amount then needs a second approver."""
    gate = open_gate(50, blind=False)
    refused = approve(gate, "june", edit=5_000_000)
    assert not refused.accepted and refused.code is RefusalCode.FORBIDDEN
    assert gate.state.edit is None and gate.state.risk is RiskLevel.MEDIUM
    raised = approve(gate, "alice", edit=5_000_000)
    assert raised.accepted and not gate.book.decided
    assert (gate.state.risk, gate.state.approvals_required) == (RiskLevel.CRITICAL, 2)


def test_an_edit_never_lowers_the_risk_below_the_proposal() -> None:
    gate = open_gate(20_000, blind=False)
    approve(gate, "alice", edit=0)
    assert (gate.state.risk, gate.state.approvals_required) == (RiskLevel.CRITICAL, 2)
    assert not gate.book.decided


def test_look_alike_names_are_one_identity() -> None:
    gate = open_gate(20_000, blind=False)
    assert not approve(gate, "SVC-Billing ").accepted  # the requester, respelled
    assert approve(gate, "bob").accepted
    again = approve(gate, "bob\u200b", request_id="zw")
    assert not again.accepted and "already approved" in again.message


def test_refusals_are_counted_not_kept_whole() -> None:
    gate = open_gate(50, blind=False)
    for index in range(50):
        act(gate, verdict=Verdict.REJECT, name="mallory", proven=False, digest="0" * 64,
            request_id=f"m{index}", edit_amount=None, stale_role=False)
    assert gate.state.refused == 50
    kept = [r for r in gate.state.reviews if not r.accepted]
    assert len(kept) == approvals.MAX_KEPT_REFUSALS
    assert all(r.request_id.startswith("refused-") for r in kept)
    assert gate.state.status is DecisionStatus.PENDING_REVIEW and not gate.book.decided


def test_a_forged_action_cannot_take_a_reviewers_request_id() -> None:
    gate = open_gate(50, blind=False)
    forged = approve(gate, "alice", request_id="alice:1", proven=False)
    assert not forged.accepted
    real = approve(gate, "alice", request_id="alice:1")
    assert real.accepted and gate.book.decided


def test_a_blind_edit_is_never_executed() -> None:
    gate = open_gate(50, blind=True)
    approve(gate, "alice", edit=60)
    approve(gate, "bob")
    verdict = gate.book.verdict
    assert verdict is not None and verdict.verdict is Verdict.REJECT and gate.book.approved is None
