"""The reviewer state machine: which reviewer actions count, and when the gate opens.

Pure (no Temporal): ``DecisionWorkflow`` feeds it every reviewer action in
arrival order, each with the registry's answer (``AuthorizeResult``: is the
proof valid, who is it, may they decide this risk), and does what it says. The
invariant it keeps, and that ``tests/hitl/test_approvals.py`` explores over
random interleavings:

    an approval opens the gate only for content approved by the required number
    of distinct, authorized, proven reviewers, none of them the requester.

How it keeps it:

- Every action names the content it judged (``content_sha256``). An action about
  content that is no longer up for approval is a conflict, never a vote for what
  replaced it.
- An edit is new content. It is screened again by the workflow (rules, risk,
  judge); its risk never falls below the proposal's, and the approvals it needs
  follow that risk. Approvals of the old content do not carry over; the editor's
  edit is the first approval of the new one, if the editor may decide its risk.
- A reviewer counts once per content (identities compared by ``identity_key``),
  never when they requested the decision.
- Refused actions change nothing. Only a few are kept (truncated); the rest are
  counted, so no caller can grow the decision's state.

Blind double review collects independent verdicts on the proposal, which
cannot change while it runs: any rejection rejects, and an edit (an approval of
something no other reviewer saw) rejects with the edit as the correct answer.

``legacy_*`` keep the rules decisions reviewed before content binding were
decided by, so their recorded histories replay exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hitl.content import Content
from hitl.enums import ErrorCategory, LayerStatus, RefusalCode, RiskLevel, Verdict
from hitl.identity import same_identity
from hitl.payloads import AuthorizeResult
from hitl.request import Action, over_limits
from hitl.review import ApproveInput, RejectInput, ReviewAck, ReviewRecord
from hitl.state import DecisionState

MAX_KEPT_REFUSALS = 10  # refused actions kept (truncated) per decision; the rest counted
MAX_EDITS_PER_ATTEMPT = 10
MAX_ACKS = 1024  # remembered answers, for duplicate deliveries
TRUNCATED = 200  # characters kept of a refused action's free text
KEPT_TEXT = 1000  # characters of an accepted action's reason and correct answer in the state

Refusal = tuple[RefusalCode, str]


@dataclass
class Ballot:
    """One reviewer action as it arrived."""

    verdict: Verdict
    data: ApproveInput | RejectInput
    request_id: str
    received_at: datetime

    @property
    def edit(self) -> tuple[str | None, Action | None] | None:
        """The edited output and action, or None for an approval as shown."""
        data = self.data
        if isinstance(data, ApproveInput) and (data.output is not None or data.action is not None):
            return data.output, data.action
        return None


@dataclass
class ReviewBook:
    """What the workflow remembers about reviews besides its queried state."""

    requester: str | None
    # request ID -> (the proven reviewer who sent it, its first answer)
    acks: dict[str, tuple[str, ReviewAck]] = field(default_factory=dict)
    verdict: ReviewRecord | None = None  # the attempt's final verdict
    approved: Content | None = None  # what runs when ``verdict`` approves
    blind_edits: dict[str, Content | None] = field(default_factory=dict)
    edits: int = 0
    # This attempt's accepted actions whole (the state keeps them shortened, the store whole):
    # a rejection's correct answer goes back to the service from here.
    accepted: list[ReviewRecord] = field(default_factory=list)
    # Decisions reviewed before content binding: the edit that runs, the blind approvals.
    legacy_edit: ApproveInput | None = None
    legacy_blind_inputs: dict[str, ApproveInput] = field(default_factory=dict)

    @property
    def decided(self) -> bool:
        return self.verdict is not None

    def remember(self, request_id: str, reviewer: str, ack: ReviewAck) -> None:
        """Keep the answer to a proven action for its duplicates, the newest MAX_ACKS.

        Forgetting an old one is safe: a duplicate of a forgotten approval is
        refused as a second vote by the same reviewer, a duplicate of a decisive
        one as "already decided"; neither counts twice.
        """
        self.acks[request_id] = (reviewer, ack)
        while len(self.acks) > MAX_ACKS:
            del self.acks[next(iter(self.acks))]

    def answered(self, request_id: str, reviewer: str) -> ReviewAck | None:
        """The first answer to ``request_id`` if ``reviewer`` sent it (a duplicate)."""
        known = self.acks.get(request_id)
        return known[1] if known is not None and same_identity(known[0], reviewer) else None

    def reset(self) -> None:
        """Everything reviews decided is per output: forget it for the next one."""
        self.verdict, self.approved, self.legacy_edit = None, None, None
        self.blind_edits, self.legacy_blind_inputs, self.edits = {}, {}, 0
        self.accepted = []

    def new_attempt(self, state: DecisionState, proposal: Content) -> None:
        """Start over with ``proposal`` up for approval."""
        self.reset()
        state.proposal, state.edit, state.approved_by = proposal, None, []


# --------------------------------------------------------------------- checks

def refusal(state: DecisionState, book: ReviewBook, ballot: Ballot,
            authorization: AuthorizeResult | None, *, stale: bool) -> Refusal | None:
    """Why ``ballot`` must be refused, or None to take it.

    Args:
        authorization: the registry's answer; None when it was not asked (the
            action is refused for another reason first).
        stale: the action was made against an output that a rejection has since
            sent back for regeneration.
    """
    if book.decided or not state.status.is_open:
        return decided_refusal(state)
    if stale:
        return RefusalCode.NOT_WAITING, (
            f"decision {state.decision_id} is being regenerated after a rejection; "
            "review the new output once it is waiting")
    if state.zone is not None and not state.zone.needs_review:
        return RefusalCode.NOT_WAITING, (f"decision {state.decision_id} was routed "
                                         f"{state.zone.value} and is not waiting for review")
    if (problem := over_limits(ballot.data)) is not None:
        return RefusalCode.FORBIDDEN, problem
    if ballot.data.request_id is None:
        # Without one, a proven action replayed from history would be a new action.
        return RefusalCode.FORBIDDEN, ("request_id is required: a unique ID per action, "
                                       "signed with it (hitl and the API set one)")
    if authorization is None or not authorization.allowed or authorization.reviewer is None:
        reason = authorization.reason if authorization else None
        code = authorization.code if authorization and authorization.code else (
            RefusalCode.UNPROVEN)
        return code, reason or "reviewer not authorized"
    content = state.up_for_approval
    claimed = ballot.data.content_sha256
    if content is None or claimed != content.sha256:
        return RefusalCode.CONTENT_CHANGED, refusal_text_changed(content, claimed)
    if any(r.request_id == ballot.request_id for r in state.reviews if r.accepted):
        return RefusalCode.FORBIDDEN, (f"request ID {ballot.request_id[:64]!r} was already "
                                       "used by another reviewer's action; use a new one")
    reviewer = authorization.reviewer
    if state.blind_review and any(
            r.accepted and r.blind and r.attempt == state.attempt
            and same_identity(r.reviewer, reviewer) for r in state.reviews):
        return RefusalCode.FORBIDDEN, (f"{reviewer} already gave a verdict; a blind double "
                                       f"review needs {state.approvals_required} distinct "
                                       "reviewers")
    if ballot.verdict is Verdict.APPROVE:
        if same_identity(reviewer, book.requester):
            return RefusalCode.FORBIDDEN, (f"{reviewer} requested this decision and cannot "
                                           "approve it")
        if any(same_identity(reviewer, name) for name in state.approved_by):
            return RefusalCode.FORBIDDEN, (f"{reviewer} already approved this content; "
                                           f"{state.approvals_required} distinct approvers "
                                           "are needed")
        if ballot.edit is not None and not state.blind_review and (
                book.edits >= MAX_EDITS_PER_ATTEMPT):
            return RefusalCode.FORBIDDEN, (f"this output was edited {book.edits} times; "
                                           "approve or reject what is up now")
    return None


def decided_refusal(state: DecisionState) -> Refusal:
    return RefusalCode.DECIDED, (f"decision {state.decision_id} is already decided "
                                 f"({state.status.value})")


def refusal_text_changed(content: Content | None, claimed: str | None) -> str:
    if content is None:  # only before routing, which reviews wait for
        return "nothing is up for approval yet; reload and review it once it is"
    if claimed is None:
        return ("content_sha256 is required: the digest of the content you reviewed, as "
                "the review view shows it")
    return (f"the content up for approval changed since you loaded it (it is now "
            f"sha256:{content.sha256[:16]}, you reviewed sha256:{claimed[:16]}); "
            "reload and review it again")


def needs_reauthorization(state: DecisionState, authorization: AuthorizeResult | None) -> bool:
    """The registry answered for a lower risk than the decision has now (an edit
    raised it while this action waited its turn): ask again for the new risk."""
    if authorization is None or not authorization.allowed:
        return False
    return state.risk is not None and (
        authorization.risk is None or authorization.risk.rank < state.risk.rank)


def edited_content(state: DecisionState, ballot: Ballot, reviewer: str) -> Content | None:
    """The content an edit proposes, or None when it changes nothing (then it is an
    approval of what is up). Screening fills in its risk and findings."""
    edit, content = ballot.edit, state.up_for_approval
    if edit is None or content is None:
        return None
    output, action = edit
    edited = Content.of(output if output is not None else content.output,
                        action if action is not None else content.action,
                        edited_by=reviewer, edited_from_sha256=content.sha256)
    return None if edited.sha256 == content.sha256 else edited


def screened(edited: Content, *, proposal_risk: RiskLevel, proposal_required: int,
             risk: RiskLevel, required: int, rule_failures: list[str],
             judge: LayerStatus | None = None) -> tuple[Content, int]:
    """An edit with what screening found: its risk never below the proposal's, and
    the approvals it needs never fewer than the proposal needed."""
    return edited.model_copy(update={
        "risk": risk.at_least(proposal_risk), "rule_failures": rule_failures, "judge": judge,
    }), max(required, proposal_required)


# --------------------------------------------------------------------- taking

def record_of(state: DecisionState, ballot: Ballot, authorization: AuthorizeResult | None,
              refused: Refusal | None, *, attempt: int) -> ReviewRecord:
    """The record of ``ballot``, under the registered name when the registry knew it.
    A refused one gets a request ID of its own, so it can never take the store's row
    for an accepted action with the same ID."""
    data, received = ballot.data, ballot.received_at
    start = (state.escalated_at if state.escalated_at and state.escalated_at <= received
             else state.submitted_at)
    known = authorization is not None and authorization.reviewer is not None
    request_id = ballot.request_id
    if refused is not None:
        request_id = f"refused-{state.refused + 1}:{request_id}"[:200]
    record = ReviewRecord(
        request_id=request_id,
        reviewer=authorization.reviewer if known and authorization else data.reviewer,
        verdict=ballot.verdict, reason=data.reason, received_at=received,
        time_on_page_seconds=data.time_on_page_seconds,
        latency_seconds=(received - start).total_seconds(), attempt=attempt,
        accepted=refused is None, refusal=refused[1] if refused else None,
        refusal_code=refused[0] if refused else None, blind=state.blind_review,
        content_sha256=data.content_sha256,
        proven=bool(authorization and authorization.proven))
    if isinstance(data, ApproveInput):
        record.edited = ballot.edit is not None
        record.flag_for_monitoring = data.flag_for_monitoring
    else:
        record.correct_answer, record.error_category = data.correct_answer, data.error_category
    return record


def take(state: DecisionState, book: ReviewBook, record: ReviewRecord, ballot: Ballot) -> str:
    """Apply an accepted approval (as shown) or rejection; the message for the reviewer."""
    if state.blind_review:
        return _take_blind(state, book, record, ballot)
    content = state.up_for_approval
    assert content is not None  # refusal() checked it names this content
    record.edited = False  # an "edit" that changes nothing approves what is up
    if record.verdict is Verdict.REJECT:
        book.verdict = record
        return "reject accepted"
    state.approved_by.append(record.reviewer)
    return _maybe_final(state, book, record, content)


def take_edit(state: DecisionState, book: ReviewBook, record: ReviewRecord,
              edited: Content, required: int) -> str:
    """Put an accepted, screened edit up for approval, with its editor's approval."""
    record.edited, record.content_sha256 = True, edited.sha256
    record.edited_from_sha256 = edited.edited_from_sha256
    state.edit, state.risk, state.approvals_required = edited, edited.risk, required
    state.approved_by = [record.reviewer]
    book.edits += 1
    return _maybe_final(state, book, record, edited, edited=True)


def _maybe_final(state: DecisionState, book: ReviewBook, record: ReviewRecord,
                 content: Content, *, edited: bool = False) -> str:
    have, need = len(state.approved_by), state.approvals_required
    if have < need:
        what = "edit recorded as approval" if edited else "approval"
        return (f"{what} {have} of {need} recorded (sha256:{content.sha256[:16]}); "
                "another approver is needed")
    book.verdict, book.approved = record, content
    return "edit approved" if edited else "approve accepted"


def _take_blind(state: DecisionState, book: ReviewBook, record: ReviewRecord,
                ballot: Ballot) -> str:
    """Collect a blind verdict; decide once every required reviewer gave one."""
    proposal = state.proposal
    assert proposal is not None
    if ballot.verdict is Verdict.APPROVE:
        state.approved_by.append(record.reviewer)
        edit = ballot.edit
        book.blind_edits[record.request_id] = None if edit is None else Content.of(
            edit[0] if edit[0] is not None else proposal.output,
            edit[1] if edit[1] is not None else proposal.action,
            edited_by=record.reviewer, edited_from_sha256=proposal.sha256)
        record.edited = edit is not None
    verdicts = [r for r in [*state.reviews, record]
                if r.accepted and r.blind and r.attempt == state.attempt]
    if len(verdicts) < state.approvals_required:
        return (f"blind verdict {len(verdicts)} of {state.approvals_required} recorded; "
                "an independent reviewer decides too")
    rejection = next((r for r in verdicts if r.verdict is Verdict.REJECT), None)
    if rejection is not None:
        book.verdict = whole(book, rejection, record)
        return (f"{record.verdict.value} recorded; blind double review rejected "
                f"(rejected by {rejection.reviewer})")
    edits = [e for r in verdicts if (e := book.blind_edits.get(r.request_id)) is not None]
    if edits:
        book.verdict = record.model_copy(update={
            "request_id": f"blind:{state.attempt}", "reviewer": "blind double review",
            "verdict": Verdict.REJECT, "edited": False, "error_category": ErrorCategory.OTHER,
            "reason": "a blind reviewer edited the output: an edit no other reviewer saw is "
                      "not executed; it is kept as the correct answer",
            "correct_answer": edits[0].output})
        return "approve recorded; a blind reviewer edited: rejected with the edit as correction"
    book.verdict, book.approved = record, proposal
    return "approve accepted"


def keep(state: DecisionState, book: ReviewBook, record: ReviewRecord) -> bool:
    """Add ``record`` to the decision's reviews; False when a refusal is only counted
    (then it is not written to the store either).

    Accepted actions are bounded by the policy (approvers, edits per attempt) and keep
    KEPT_TEXT characters of their reason and correct answer in the state (the store
    and ``book.accepted`` keep them whole). Refused ones are not bounded by anything,
    so past MAX_KEPT_REFUSALS they only add to a counter, and those kept keep
    TRUNCATED characters of their text.
    """
    if record.accepted:
        book.accepted.append(record)
        state.reviews.append(truncated(record, KEPT_TEXT))
        return True
    state.refused += 1
    if state.refused > MAX_KEPT_REFUSALS:
        return False
    state.reviews.append(truncated(record, TRUNCATED))
    return True


def truncated(record: ReviewRecord, limit: int = TRUNCATED) -> ReviewRecord:
    """``record`` with its free text cut to ``limit`` characters (a copy if cut)."""
    def cut(text: str | None) -> str | None:
        return text if text is None or len(text) <= limit else text[:limit] + "…"
    texts = (record.reviewer, record.reason, record.correct_answer, record.refusal)
    if all(text is None or len(text) <= limit for text in texts):
        return record
    return record.model_copy(update={
        "reviewer": cut(record.reviewer) or "", "reason": cut(record.reason) or "",
        "correct_answer": cut(record.correct_answer), "refusal": cut(record.refusal)})


def whole(book: ReviewBook, kept: ReviewRecord, current: ReviewRecord) -> ReviewRecord:
    """The whole record of an accepted action the state keeps shortened."""
    if kept.request_id == current.request_id:
        return current
    return next((r for r in book.accepted if r.request_id == kept.request_id), kept)


def blind_rejection(state: DecisionState, book: ReviewBook) -> ReviewRecord | None:
    """The first accepted rejection of a blind review still waiting for verdicts, whole."""
    if not state.blind_review:
        return None
    kept = next((r for r in state.reviews if r.accepted and r.blind
                 and r.attempt == state.attempt and r.verdict is Verdict.REJECT), None)
    return None if kept is None else whole(book, kept, kept)


# --------------------------------------------------------------------- legacy

def legacy_refusal(*, state: DecisionState, verdict: Verdict, reviewer: str,
                   requester: str | None, decided: bool,
                   authorization: str | None) -> str | None:
    """The checks of decisions reviewed before content binding, unchanged, so their
    histories replay: exact-string identities, no content digest."""
    if decided or not state.status.is_open:
        return f"decision {state.decision_id} is already decided ({state.status.value})"
    if state.zone is not None and not state.zone.needs_review:
        return (f"decision {state.decision_id} was routed {state.zone.value} and is not "
                "waiting for review")
    if authorization is not None:
        return authorization
    if state.blind_review and any(r.accepted and r.blind and r.attempt == state.attempt
                                  and r.reviewer == reviewer for r in state.reviews):
        return (f"{reviewer} already gave a verdict; a blind double review needs "
                f"{state.approvals_required} distinct reviewers")
    if verdict is Verdict.APPROVE:
        if requester is not None and reviewer == requester:
            return f"{reviewer} requested this decision and cannot approve it"
        if reviewer in state.approved_by:
            return (f"{reviewer} already approved; {state.approvals_required} distinct "
                    "approvers are needed")
    return None


def legacy_take(state: DecisionState, book: ReviewBook, record: ReviewRecord,
                data: ApproveInput | RejectInput) -> str:
    """Apply an accepted action as decisions before content binding did."""
    if state.blind_review:
        return _legacy_take_blind(state, book, record, data)
    if record.verdict is Verdict.REJECT:
        book.verdict = record
        return "reject accepted"
    state.approved_by.append(record.reviewer)
    if isinstance(data, ApproveInput) and record.edited:
        book.legacy_edit = data
    if len(state.approved_by) < state.approvals_required:
        return (f"approval {len(state.approved_by)} of {state.approvals_required} recorded; "
                "another approver is needed")
    book.verdict = record
    return "approve accepted"


def _legacy_take_blind(state: DecisionState, book: ReviewBook, record: ReviewRecord,
                       data: ApproveInput | RejectInput) -> str:
    if isinstance(data, ApproveInput):
        state.approved_by.append(record.reviewer)
        book.legacy_blind_inputs[record.request_id] = data
    verdicts = [r for r in state.reviews
                if r.accepted and r.blind and r.attempt == state.attempt]
    if len(verdicts) < state.approvals_required:
        return (f"blind verdict {len(verdicts)} of {state.approvals_required} recorded; "
                "an independent reviewer decides too")
    rejection = next((r for r in verdicts if r.verdict is Verdict.REJECT), None)
    if rejection is not None:
        book.verdict = rejection
        return (f"{record.verdict.value} recorded; blind double review rejected "
                f"(rejected by {rejection.reviewer})")
    approvals = [book.legacy_blind_inputs[r.request_id] for r in verdicts]
    outputs = {(a.output, a.action.model_dump_json() if a.action else None)
               for a in approvals}
    edits = [a for a in approvals if a.output is not None or a.action is not None]
    if len(outputs) > 1:
        book.verdict = record.model_copy(update={
            "request_id": f"blind:{state.attempt}", "reviewer": "blind double review",
            "verdict": Verdict.REJECT, "edited": False, "error_category": ErrorCategory.OTHER,
            "reason": "blind reviewers approved different outputs; none has every "
                      "reviewer's approval",
            "correct_answer": next((a.output for a in edits if a.output is not None),
                                   None)})
        return "approve recorded; blind reviewers approved different outputs: rejected"
    book.legacy_edit = edits[0] if edits else None
    book.verdict = record
    return "approve accepted"

