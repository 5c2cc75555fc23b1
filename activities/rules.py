"""The rules layer as a local activity: cheap, deterministic, recorded.

It runs as an activity (not inline in the workflow) so that its result, and the
policy assessment it carries, is written to history: a later edit of the
policy file changes new decisions, never the replay of old ones.
"""

from __future__ import annotations

from temporalio import activity

from hitl.cascade import RulesResult
from hitl.policy import Policy, assess
from hitl.policy_versions import PolicySource
from hitl.request import DecisionRequest
from hitl.rules import check_rules as run_rules
from hitl.sampling import adapt


class RulesActivities:
    """Screens under a fixed ``policy``, or under ``source``'s current snapshot: the
    active stored version with the adaptive audit rate and load shedding applied
    (read from memory; the source refreshes in the background)."""

    def __init__(self, *, policy: Policy | None = None, judge_configured: bool,
                 source: PolicySource | None = None) -> None:
        if (policy is None) == (source is None):
            raise ValueError("RulesActivities needs exactly one of policy and source")
        self._policy = policy
        self._source = source
        self._judge_configured = judge_configured

    # Async on purpose: it reads memory and computes (about 20 us), so the event loop
    # runs it directly instead of handing it to a thread and waking the loop after.
    @activity.defn(name="check_rules")
    async def check_rules(self, request: DecisionRequest) -> RulesResult:
        if self._source is None:
            assert self._policy is not None
            return RulesResult(
                assessment=assess(request, self._policy, judge_configured=self._judge_configured),
                findings=run_rules(request, self._policy),
            )
        screening = self._source.current()
        policy = screening.policy
        assessment = adapt(
            assess(request, policy, judge_configured=self._judge_configured),
            task_type=request.task_type, policy=policy, audit_stats=screening.audit_stats,
            queue_depth=screening.queue_depth)
        return RulesResult(assessment=assessment, findings=run_rules(request, policy))
