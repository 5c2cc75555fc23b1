"""Activity timeouts and retry policies, in one place.

Temporal owns retries: the HTTP clients inside activities make one attempt
each. Judge retries are few because a person is the fallback; executor retries
are patient because an approved action must eventually run.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

RULES_TIMEOUT = timedelta(seconds=10)
RULES_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=200))

JUDGE_TIMEOUT = timedelta(seconds=30)
JUDGE_RETRY = RetryPolicy(
    maximum_attempts=3,
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    non_retryable_error_types=["JudgeRejected", "JudgeVerdictInvalid"],
)

# Few retries: a regeneration that keeps failing ends the decision rejected.
REGENERATE_TIMEOUT = timedelta(seconds=30)
REGENERATE_RETRY = RetryPolicy(
    maximum_attempts=3,
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    non_retryable_error_types=["RegenerateRejected", "RegenerateInvalid"],
)

EXECUTE_TIMEOUT = timedelta(seconds=30)
EXECUTE_SCHEDULE_TO_CLOSE = timedelta(hours=6)
EXECUTE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=["ExecutionRejected"],
)

STORE_TIMEOUT = timedelta(seconds=30)
STORE_SCHEDULE_TO_CLOSE = timedelta(hours=1)
STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)

AUTHORIZE_RETRY = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(milliseconds=200))

# Used when the rules layer itself cannot run: route as critical, to a person.
FAILSAFE_ESCALATE_SECONDS = 300.0
FAILSAFE_HARD_DEADLINE_SECONDS = 86400.0
