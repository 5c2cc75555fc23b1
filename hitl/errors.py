"""Errors hitl raises, as one small hierarchy so callers can catch by meaning.

    HitlError
    ├── InputError                 bad input from a caller; the CLI exits with 2
    │   ├── PolicyError            a policy file that does not validate
    │   ├── ReviewRefused          a review the workflow will not accept
    │   └── OutboundRefused        a URL the outbound policy will not send to
    ├── DecisionNotFound           no decision with that ID
    ├── DecisionConflict           same decision ID, different payload
    ├── DecisionClosed             the decision has already finished
    ├── DecisionUnreadable         it exists but cannot be read (its workflow task fails)
    ├── StoreError                 the feedback store failed
    ├── TemporalUnavailable        the Temporal server cannot be reached
    └── DevServerError             the embedded Temporal dev server did not start

Inside workflows and activities failures cross the Temporal boundary as
``ApplicationError`` with one of the ``*_TYPE`` strings below as its type, so a
caller can map them back without string matching on messages.
"""

from __future__ import annotations

JUDGE_REJECTED_TYPE = "JudgeRejected"
JUDGE_VERDICT_INVALID_TYPE = "JudgeVerdictInvalid"
EXECUTION_REJECTED_TYPE = "ExecutionRejected"
REVIEW_REFUSED_TYPE = "ReviewRefused"
OUTBOUND_REFUSED_TYPE = "OutboundRefused"
PAYLOAD_REFUSED_TYPE = "PayloadRefused"  # a payload in clear where encryption is on (hitl.codec)


class HitlError(Exception):
    """Base of every error hitl raises on purpose."""


class InputError(HitlError):
    """Bad input: a field that does not validate, an unknown option.

    ``field`` names the offending field (dotted path) where one is known.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PolicyError(InputError):
    """A policy file that cannot be read or does not validate."""


class ReviewRefused(InputError):
    """A reviewer action refused: decided already, content changed, unproven, self-approval.

    ``code`` (a ``hitl.enums.RefusalCode`` value) says which kind, where the workflow
    gave one: ``code_is_conflict`` refusals mean "reload and look again".
    """

    def __init__(self, message: str, *, field: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, field=field)
        self.code = code


class OutboundRefused(InputError):
    """A URL the worker may not send to (``HITL_OUTBOUND_ALLOW_HOSTS``, or an address no
    service lives at). ``host`` is the URL's host, ``reason`` why, naming it."""

    def __init__(self, reason: str, *, host: str, field: str | None = None) -> None:
        super().__init__(f"outbound request refused: {reason}", field=field)
        self.host = host
        self.reason = reason


class DecisionNotFound(HitlError):
    """No decision workflow with the given ID exists."""


class DecisionConflict(HitlError):
    """A decision ID was submitted again with a different payload."""


class DecisionClosed(HitlError):
    """A reviewer action reached a decision that has already finished."""


class DecisionUnreadable(HitlError):
    """The decision's workflow exists but its state or request cannot be read: its
    workflow task is failing, a query failed, or it is not a decision at all."""


class StoreError(HitlError):
    """The feedback store could not be read or written."""


class TemporalUnavailable(HitlError):
    """The Temporal frontend did not answer."""


class DevServerError(HitlError):
    """The embedded Temporal dev server could not be started."""
