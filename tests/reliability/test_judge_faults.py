"""A misbehaving judge never makes a decision autonomous.

Every decision here is confident enough to run alone if the judge passed it.
The judge endpoint misbehaves per decision (the fault is named in the
request's context, which the judge receives): too slow for the judge timeout,
a body over the size limit, a verdict with missing fields, a JSON array
instead of an object, an array envelope, non-string content, an out-of-range
score, an empty body, no choices, a hang-up without a response, and 429 on
every attempt. Each one must end at a person: zone QUEUE (low risk) or
ESCALATE (high risk), judge status ``error`` with a reason, nothing delivered.

Already covered in tests/workflows/test_decision.py and not repeated here:
HTTP 500 on every attempt, HTTP 401, an HTML body, prose, an extra field.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from hitl.enums import DecisionStatus, LayerStatus, Zone
from hitl.review import RejectInput
from tests.conftest import WorkerFactory
from tests.factories import make_request
from tests.http_servers import Judge, LocalServer, chat_completion
from tests.reliability.harness import (
    KeyedTarget,
    bounded,
    serve_target,
    summary,
    until,
)
from tests.reviewing import reject

pytestmark = pytest.mark.timeout(120)

JUDGE_TIMEOUT = 1.0  # Settings.judge_timeout_seconds: the httpx timeout per attempt
SLOW = 3.0  # the slow judge answers after this long, well past the timeout

# fault -> (judge calls expected: 3 when retrying can help, 1 when it cannot;
#           words the recorded reason must contain, any of). The workflow records the
#           innermost cause, so a parse failure reads as the parser's own error; a
#           transport failure or a status reads as the class alone (the worker log has
#           the detail), since decision state is readable by anyone.
NOT_A_COMPLETION = ("not a chat completion",)
UNAVAILABLE = ("judge endpoint unavailable",)
FAULTS: dict[str, tuple[int, tuple[str, ...]]] = {
    "slow": (3, UNAVAILABLE),
    "oversized": (1, ("exceeds",)),
    "missing_field": (1, ("score",)),
    "verdict_array": (1, ("not a json object",)),
    "envelope_array": (1, (*NOT_A_COMPLETION, "TypeError")),
    "content_object": (1, ("not a string",)),
    "score_out_of_range": (1, ("score",)),
    "empty_body": (1, (*NOT_A_COMPLETION, "JSONDecodeError")),
    "no_choices": (1, (*NOT_A_COMPLETION, "IndexError")),
    "hangup": (3, UNAVAILABLE),
    "429": (3, UNAVAILABLE),
}


class Hangup(Exception):
    """Raised by the judge to drop the connection without an answer."""


class FaultyJudge(Judge):
    """Misbehaves as the decision's ``context.fault`` says; passes otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __call__(self, body: dict[str, Any]) -> tuple[int, bytes]:
        document = body["messages"][1]["content"].split("\n")[1]
        fault = json.loads(document)["context"].get("fault", "pass")
        self.calls[fault] += 1
        verdict = {"pass": True, "score": 0.93, "reasons": ["consistent"]}
        if fault == "slow":
            time.sleep(SLOW)
        elif fault == "oversized":
            return 200, chat_completion(json.dumps({**verdict, "reasons": ["x" * 100_000]}))
        elif fault == "missing_field":
            return 200, chat_completion(json.dumps({"pass": True, "reasons": []}))
        elif fault == "verdict_array":
            return 200, chat_completion(json.dumps([verdict]))
        elif fault == "envelope_array":
            return 200, json.dumps([json.loads(chat_completion(json.dumps(verdict)))]).encode()
        elif fault == "content_object":
            return 200, json.dumps({"choices": [{"message": {"content": verdict}}]}).encode()
        elif fault == "score_out_of_range":
            return 200, chat_completion(json.dumps({**verdict, "score": 1.7}))
        elif fault == "empty_body":
            return 200, b""
        elif fault == "no_choices":
            return 200, b'{"choices": []}'
        elif fault == "hangup":
            raise Hangup
        elif fault == "429":
            return 429, b'{"error": "rate limited"}'
        return 200, chat_completion(json.dumps(verdict))


@pytest.fixture
def faulty_judge() -> Iterator[tuple[LocalServer, FaultyJudge]]:
    judge = FaultyJudge()
    server = LocalServer(judge)
    server.server.handle_error = lambda *_: None  # type: ignore[method-assign]  # hangups
    with server:
        yield server, judge


def _request(fault: str, *, high: bool, target_url: str) -> Any:
    context = {"fault": fault}
    if high:  # would be AUTO_AUDIT with a passing judge
        return make_request(task_type="content_moderation", outcome="approve", confidence=0.99,
                            output="approve post", context=context,
                            action={"type": "approve_post", "params": {"post_id": "p"},
                                    "target_url": target_url})
    return make_request(confidence=0.99, context=context,  # would be AUTO
                        action={"target_url": target_url})


async def test_every_judge_fault_sends_the_decision_to_a_person(
        hitl_worker: WorkerFactory, faulty_judge: tuple[LocalServer, FaultyJudge]) -> None:
    started = time.monotonic()
    server, judge = faulty_judge
    target = KeyedTarget()
    with serve_target(target) as http:
        act = f"{http.url}/act"
        faulty = {(fault, high): _request(fault, high=high, target_url=act)
                  for fault in FAULTS for high in (False, True)}
        control = _request("pass", high=False, target_url=act)
        async with hitl_worker(judge_url=server.url, judge_timeout_seconds=JUDGE_TIMEOUT) as hitl:
            await bounded(16, [hitl.submit(r) for r in [*faulty.values(), control]])

            async def all_routed() -> bool:
                states = await bounded(16, [hitl.status(r.decision_id)
                                            for r in faulty.values()])
                return all(getattr(s, "status", None) is not DecisionStatus.SCREENING
                           for s in states)

            await until(all_routed, within=60, what="every faulty decision routed")
            states = {key: await hitl.status(r.decision_id) for key, r in faulty.items()}
            passed = await hitl.wait(control.decision_id, timeout=30)
            await bounded(16, [reject(hitl, r.decision_id, RejectInput(reviewer="rita",
                                                                     reason="judge fault"))
                               for r in faulty.values()])
            finals = await bounded(16, [hitl.wait(r.decision_id, timeout=30)
                                        for r in faulty.values()])

    problems = []
    for (fault, high), state in states.items():
        calls, words = FAULTS[fault]
        zone = Zone.ESCALATE if high else Zone.QUEUE
        judged = state.judge
        if (state.zone, state.status) != (zone, DecisionStatus.PENDING_REVIEW):
            problems.append(f"{fault}/{'high' if high else 'low'}: {state.zone} {state.status}")
        if judged is None or judged.status is not LayerStatus.ERROR or not judged.reasons:
            problems.append(f"{fault}: judge {judged}")
        elif not any(w.lower() in " ".join(judged.reasons).lower() for w in words):
            problems.append(f"{fault}: reason {judged.reasons} lacks any of {words}")
        if state.deliveries:
            problems.append(f"{fault}: delivered {state.deliveries}")
    for fault, (calls, _) in FAULTS.items():
        if judge.calls[fault] != 2 * calls:  # two decisions per fault
            problems.append(f"{fault}: judge called {judge.calls[fault]} times, "
                            f"expected {2 * calls}")
    autonomous = sum(1 for s in states.values() if s.zone in (Zone.AUTO, Zone.AUTO_AUDIT))
    reasons = {fault: state.judge.reasons[0] for (fault, high), state in states.items()
               if not high and state.judge and state.judge.reasons}
    summary("judge_faults", decisions=len(states), faults_injected=len(FAULTS),
            judge_calls=sum(judge.calls[f] for f in FAULTS), to_a_person=len(states) - autonomous,
            autonomous=autonomous, executed=sum(target.effects.values()),
            control=passed.zone.value if passed.zone else None,
            seconds=f"{time.monotonic() - started:.1f}", reasons=json.dumps(reasons))
    assert not problems, "\n".join(problems)
    assert passed.zone is Zone.AUTO and passed.status is DecisionStatus.EXECUTED  # the control
    assert [f.status for f in finals] == [DecisionStatus.REJECTED] * len(finals)
    assert dict(target.effects) == {f"{control.decision_id}:execute": 1}
