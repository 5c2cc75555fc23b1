"""Bad input, fuzzed: requests, policies and reviewer signals.

- The request model: any JSON is a valid ``DecisionRequest`` or a pydantic
  ``ValidationError``, never another exception; a valid one survives the data
  converter unchanged (what the client sends is what the workflow gets).
- The policy: any TOML-ish mapping (and any text as a policy file) is a
  ``Policy`` or a ``PolicyError`` naming a field, never another exception.
- Signals: arbitrary JSON sent as ``approve``/``reject`` to a decision waiting
  for review, through the raw client and through ``temporal workflow signal``,
  never fails a workflow task (no ``WorkflowTaskFailed`` in history) and the
  decision still completes after a valid review.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from hitl.client import HitlClient
from hitl.connection import data_converter
from hitl.enums import DecisionStatus, Zone
from hitl.errors import PolicyError
from hitl.policy import Policy, assess, load_policy, parse_policy
from hitl.request import DecisionRequest
from hitl.review import ApproveInput, RejectInput
from hitl.rules import check_rules
from tests.conftest import BIN, WorkerFactory, test_policy
from tests.factories import make_request
from tests.reliability.harness import SEED, summary, until, wft_failures
from tests.reviewing import approve, reject

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow], database=None)
TRIED: dict[str, int] = {"request": 0, "request_json": 0, "policy": 0, "policy_text": 0}

# ------------------------------------------------------------ strategies

scalars = (st.none() | st.booleans() | st.integers() | st.text(max_size=30)
           | st.floats(allow_nan=True, allow_infinity=True))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12)
toml_scalars = scalars | st.datetimes() | st.dates() | st.times()
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12)

POLICY = load_policy()
VALID = make_request(decision_id="fuzz-1").model_dump(mode="json")
REQUEST_PATHS = [("decision_id",), ("task_type",), ("action",), ("action", "type"),
                 ("action", "params"), ("action", "reversible"), ("action", "target_url"),
                 ("output",), ("confidence",), ("outcome",), ("candidates",),
                 ("candidates", 0), ("candidates", 0, "score"), ("context",),
                 ("context", "amount"), ("context", "is_new_user"),
                 ("context", "requested_by"), ("context", "extra"), ("unknown",)]
DEFAULT_POLICY = load_policy().model_dump(mode="json")
POLICY_PATHS = [(section,) for section in DEFAULT_POLICY] + [
    (section, key) for section, body in DEFAULT_POLICY.items() if isinstance(body, dict)
    for key in body] + [("sla", "unknown"), ("unknown",), ("thresholds", "by_risk", "low"),
                        ("rules", "max_amount", "refund"), ("review", "approvals_by_risk",
                                                            "critical")]


def _set(data: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> Any:
    data = json.loads(json.dumps(data))
    node = data
    for part in path[:-1]:
        if isinstance(node, dict) and isinstance(node.get(part), dict | list):
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return data
    last = path[-1]
    if isinstance(node, dict):
        if delete:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value
    return data


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _check_request(value: Any) -> None:
    try:
        request = DecisionRequest.model_validate(value)
    except ValidationError:
        return
    request.payload_sha256()
    for policy in (POLICY,):  # the screening a valid request gets must never raise
        check_rules(request, policy)
        assess(request, policy, judge_configured=True)
    converter = data_converter().payload_converter
    back = converter.from_payloads(converter.to_payloads([request]), [DecisionRequest])[0]
    if _finite(value):  # JSON has no NaN; Python's json module does, and pydantic writes null
        assert back == request, (request, back)


# ------------------------------------------------------------- requests


@FUZZ
@given(json_values)
def test_any_json_is_a_request_or_a_validation_error(value: Any) -> None:
    TRIED["request"] += 1
    _check_request(value)


@FUZZ
@given(st.sampled_from(REQUEST_PATHS), json_values, st.booleans())
@example(("action", "params"), {"amount": 10**400}, False)  # crashed the rules layer
@example(("action", "params"), {"amount": "1e999"}, False)
def test_a_valid_request_with_one_field_replaced(path: tuple[Any, ...], value: Any,
                                                 delete: bool) -> None:
    TRIED["request"] += 1
    _check_request(_set(VALID, path, value, delete=delete))


@FUZZ
@given(st.text() | st.binary())
@example(json.dumps(VALID))
@example('{"decision_id": "x", "confidence": NaN}')
def test_any_text_is_a_request_or_a_validation_error(text: str | bytes) -> None:
    TRIED["request_json"] += 1
    try:
        DecisionRequest.model_validate_json(text)
    except ValidationError:
        pass


# Was a bug: with temporalio 1.35 a local activity that exhausts its retries raises
# ApplicationError, not ActivityError, and _check_rules caught only the latter, so a
# crashing rules layer failed the decision instead of failing safe to a person.
@pytest.mark.timeout(60)
async def test_a_crashing_rules_layer_sends_the_decision_to_a_person(
        hitl_worker: WorkerFactory, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*_: Any) -> Any:
        raise OverflowError("int too large to convert to float")  # what 10**400 raised

    monkeypatch.setattr("activities.rules.run_rules", crash)
    async with hitl_worker() as hitl:
        request = make_request(confidence=0.99)  # AUTO if the rules passed
        await hitl.submit(request)
        handle = client.get_workflow_handle(request.decision_id)

        async def left_screening() -> bool:
            description = await handle.describe()
            if description.status is not WorkflowExecutionStatus.RUNNING:
                return True
            return (await hitl.status(request.decision_id)).status is not DecisionStatus.SCREENING

        try:
            await until(left_screening, within=30, what="the decision left screening")
            description = await handle.describe()
            status = description.status.name if description.status else None
            summary("rules_layer_crash", faults_injected=1, workflow_status=status)
            assert status == "RUNNING", f"the decision did not survive: {status}"
            state = await hitl.status(request.decision_id)
            assert (state.zone, state.status) == (Zone.ESCALATE, DecisionStatus.PENDING_REVIEW)
            assert state.rules is not None
            assert [f.rule for f in state.rules.failures] == ["rules_layer"]
            await _finish_normally(hitl, request.decision_id)
        finally:
            if (await handle.describe()).status is WorkflowExecutionStatus.RUNNING:
                await handle.terminate("fault suite")


# -------------------------------------------------------------- policies


def _check_policy(data: Any) -> Policy | None:
    try:
        return parse_policy(data)
    except PolicyError as error:
        assert error.field, error
        assert error.field in str(error), error
        return None


@FUZZ
@given(st.dictionaries(st.sampled_from([*DEFAULT_POLICY, "x"]) | st.text(max_size=8),
                       toml_values, max_size=6))
def test_any_mapping_is_a_policy_or_a_policy_error(data: dict[str, Any]) -> None:
    TRIED["policy"] += 1
    _check_policy(data)


@FUZZ
@given(st.sampled_from(POLICY_PATHS), toml_values, st.booleans())
@example(("sla", "queue"), [1], False)
@example(("sla", "escalate"), {"m": 5}, False)
@example(("sla", "hard_deadline"), 10**400, False)
@example(("sla", "hard_deadline"), "9" * 400 + "d", False)
@example(("audit", "sample_rate"), math.nan, False)
def test_the_default_policy_with_one_field_replaced(path: tuple[str, ...], value: Any,
                                                    delete: bool) -> None:
    TRIED["policy"] += 1
    _check_policy(_set(DEFAULT_POLICY, path, value, delete=delete))


@FUZZ
@given(st.text(max_size=300))
@example('version = "x"\n[thresholds.by_risk]\nlow = 0.7\nmedium = 0.8\nhigh = 0.9\n'
         'critical = 1.0\n[sla]\nqueue = [1, 2]\n')
@example('version = "x"\n[sla]\nqueue = 1979-05-27T07:32:00Z\n')
def test_any_policy_file_is_a_policy_or_a_policy_error(text: str) -> None:
    TRIED["policy_text"] += 1
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
        handle.write(text)
    path = Path(handle.name)
    try:
        load_policy(path)
    except PolicyError as error:
        assert error.field, error
    finally:
        path.unlink()


# Policies that validated but that a workflow could not use (fixed: deadlines are capped
# at a year, amount limits must be finite): the workflow failed its task (timedelta
# overflow) or the amount rule failed open.
@pytest.mark.parametrize("deadline", [
    1e12,
    "99999999999d",
    "9" * 400 + "d",  # infinite: refused since durations must be finite
    1e308 * 10,
])
def test_a_validated_deadline_fits_a_workflow_timer(deadline: Any) -> None:
    policy = _check_policy({**DEFAULT_POLICY, "sla": {**DEFAULT_POLICY["sla"],
                                                      "hard_deadline": deadline}})
    if policy is not None:
        datetime.now(UTC) + timedelta(seconds=policy.sla.hard_deadline)


def test_a_huge_deadline_policy_is_refused_naming_the_field() -> None:
    with pytest.raises(PolicyError) as error:
        test_policy(sla={"hard_deadline": 1e12})
    assert error.value.field == "sla.hard_deadline"


def test_a_nan_amount_limit_is_refused_or_fails_closed() -> None:
    data = json.loads(json.dumps(DEFAULT_POLICY))
    data["rules"]["max_amount"]["refund"] = math.nan
    policy = _check_policy(data)
    if policy is not None:
        request = make_request(task_type="refund", action={
            "type": "refund", "params": {"amount": 10**9}, "reversible": False})
        findings = {f.rule: f.passed for f in check_rules(request, policy)}
        assert findings["amount_limit"] is False


# --------------------------------------------------------------- signals


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    """Arbitrary JSON (seeded), biased towards review-shaped objects. The one
    reviewer name that can validate, ``zed``, is not registered: a payload that
    happens to be a well-formed review is refused, so the decision keeps waiting."""
    roll = rng.random()
    if depth < 3 and roll < 0.45:
        keys = ["reviewer", "reason", "request_id", "output", "action", "time_on_page_seconds",
                "correct_answer", "error_category", "flag_for_monitoring", "x", ""]
        return {rng.choice(keys): _random_json(rng, depth + 1)
                for _ in range(rng.randint(0, 5))}
    if depth < 3 and roll < 0.55:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return rng.choice([
        True, False, 0, -1, 2**63, 1.5, -1e308, "", " ", "zed", "x" * 6000, "\u0000",
        "rita ", "\ud7ff", {"reviewer": "zed", "request_id": ""},
        {"reviewer": "zed", "time_on_page_seconds": -1},
        {"reviewer": "zed", "action": {"type": "x", "target_url": "ftp://h"}},
        {"reviewer": "zed", "error_category": "nope"}, {"reviewer": ["rita"]},
    ])


async def _settled(handle: WorkflowHandle[Any, Any], after: int, within: float = 20) -> None:
    """Wait until a workflow task after event ``after`` completed or failed."""

    async def done() -> bool:
        events = (await handle.fetch_history()).events
        names = {EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
                 EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED}
        return any(e.event_id > after and e.event_type in names
                   for e in events) and not _signal_unhandled(events, after)

    await until(done, within=within, what="the bad signals were handled")


def _signal_unhandled(events: Any, after: int) -> bool:
    last_signal = max((e.event_id for e in events
                       if e.event_id > after and e.HasField(
                           "workflow_execution_signaled_event_attributes")), default=0)
    last_task = max((e.event_id for e in events if e.HasField(
        "workflow_task_completed_event_attributes") or e.HasField(
        "workflow_task_failed_event_attributes")), default=0)
    return last_task < last_signal


async def _last_event(handle: WorkflowHandle[Any, Any]) -> int:
    return (await handle.fetch_history()).events[-1].event_id


async def _pending(hitl: HitlClient, **overrides: Any) -> DecisionRequest:
    request = make_request(confidence=0.3, action={"reversible": False}, **overrides)
    await hitl.submit(request)

    async def waiting() -> bool:
        return (await hitl.status(request.decision_id)).status is DecisionStatus.PENDING_REVIEW

    await until(waiting, within=30, what="decision pending review")
    return request


async def _cli_signal(client: Client, decision_id: str, name: str, *flags: str) -> str:
    result = await asyncio.to_thread(subprocess.run, [
        str(BIN / "temporal"), "workflow", "signal", "--address",
        client.service_client.config.target_host, "--namespace", client.namespace,
        "--workflow-id", decision_id, "--name", name, *flags,
    ], capture_output=True, text=True, timeout=30)
    return "ok" if result.returncode == 0 else f"refused by the CLI: {result.stderr.strip()}"


async def _finish_normally(hitl: HitlClient, decision_id: str) -> None:
    ack = await reject(hitl, decision_id, RejectInput(reviewer="rita", reason="fuzz done"))
    assert ack.accepted
    state = await hitl.wait(decision_id, timeout=30)
    assert state.status is DecisionStatus.REJECTED


@pytest.mark.timeout(180)
async def test_arbitrary_signal_payloads_never_fail_a_workflow_task(
        hitl_worker: WorkerFactory, client: Client) -> None:
    started = time.monotonic()
    rng = random.Random(SEED)
    payloads = [_random_json(rng) for _ in range(120)]
    payloads = [p for p in payloads if p is not None]  # null: its own test below
    async with hitl_worker() as hitl:
        request = await _pending(hitl)
        handle = client.get_workflow_handle(request.decision_id)
        mark = await _last_event(handle)
        for index, payload in enumerate(payloads):
            await handle.signal(("approve", "reject")[index % 2], payload)
        cli = [
            await _cli_signal(client, request.decision_id, "approve", "--input", "{}"),
            await _cli_signal(client, request.decision_id, "approve", "--input",
                              '{"reviewer": 5}'),
            await _cli_signal(client, request.decision_id, "reject", "--input", "[1, 2]"),
            await _cli_signal(client, request.decision_id, "approve", "--input", '"alice"'),
            await _cli_signal(client, request.decision_id, "approve", "--input", "not json"),
            await _cli_signal(client, request.decision_id, "approve", "--input",
                              '{"reviewer": "alice", "unknown": true}'),
        ]
        await _settled(handle, mark)
        history = await handle.fetch_history()
        failures = wft_failures(history)
        state = await hitl.status(request.decision_id)
        assert state.status is DecisionStatus.PENDING_REVIEW, state.status
        assert not [r for r in state.reviews if r.accepted], state.reviews
        await _finish_normally(hitl, request.decision_id)
        final = await hitl.wait(request.decision_id, timeout=30)
        # The worker is still healthy: a fresh decision goes through.
        assert (await hitl.decide(make_request(confidence=0.95), timeout=30)).status is \
            DecisionStatus.EXECUTED
    summary("fuzz_signals", bad_inputs_tried=len(payloads) + len(cli),
            via_client=len(payloads), via_cli=len(cli),
            cli_refused_locally=sum(c != "ok" for c in cli),
            well_formed_but_refused=len(state.reviews), workflow_task_failures=len(failures),
            final=final.status.value, seconds=f"{time.monotonic() - started:.1f}")
    assert failures == [], failures
    assert final.status is DecisionStatus.REJECTED


# Was a bug: a signal whose argument is null (the Python client's None, or
# `--input-meta encoding=binary/null`), missing (`temporal workflow signal` without
# --input) or doubled (two --input) failed the workflow task on every retry and wedged
# the decision. The handlers now take raw payloads and drop anything but one review.


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shape", [
    "client-none",
    "cli-no-input",
    "cli-two-inputs",
    "cli-binary-null",
    "cli-json-null",
])
async def test_null_missing_or_extra_signal_arguments(hitl_worker: WorkerFactory,
                                                      client: Client, shape: str) -> None:
    async with hitl_worker() as hitl:
        request = await _pending(hitl)
        did = request.decision_id
        handle = client.get_workflow_handle(did)
        mark = await _last_event(handle)
        try:
            if shape == "client-none":
                await handle.signal("approve", None)
            elif shape == "cli-no-input":
                assert await _cli_signal(client, did, "approve") == "ok"
            elif shape == "cli-two-inputs":
                assert await _cli_signal(client, did, "approve", "--input",
                                         '{"reviewer": "alice"}', "--input",
                                         '{"reviewer": "bob"}') == "ok"
            elif shape == "cli-binary-null":
                assert await _cli_signal(client, did, "approve", "--input", "",
                                         "--input-meta", "encoding=binary/null") == "ok"
            else:
                assert await _cli_signal(client, did, "approve", "--input", "null") == "ok"
            await _settled(handle, mark)
            failures = wft_failures(await handle.fetch_history())
            summary(f"fuzz_signal_shape[{shape}]", bad_inputs_tried=1,
                    workflow_task_failures=len(failures),
                    first_failure=json.dumps(failures[0] if failures else None))
            assert failures == [], failures
            await _finish_normally(hitl, did)
        finally:
            description = await handle.describe()
            if description.status is not None and description.status.name == "RUNNING":
                await handle.terminate("fault suite: wedged by a bad signal")


@pytest.mark.timeout(120)
async def test_arbitrary_update_payloads_are_rejected_before_history(
        hitl_worker: WorkerFactory, client: Client) -> None:
    rng = random.Random(SEED + 7)
    payloads: list[Any] = [None, [], "alice", 0, {}, {"reviewer": ""}, {"reviewer": 5},
                           {"reviewer": "alice", "bogus": 1}] + [
        _random_json(rng) for _ in range(30)]
    async with hitl_worker() as hitl:
        request = await _pending(hitl)
        handle = client.get_workflow_handle(request.decision_id)
        outcomes: dict[str, int] = {}
        for index, payload in enumerate(payloads):
            name = ("approve", "reject")[index % 2]
            try:
                await asyncio.wait_for(handle.execute_update(name, payload), timeout=20)
                outcomes["accepted"] = outcomes.get("accepted", 0) + 1
                break  # a payload that happened to be a valid review decided it
            except TimeoutError:
                raise
            except Exception as exc:  # every refusal shape counts; none may hang
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
        for args in ([], [{"reviewer": "alice"}, {"reviewer": "bob"}]):
            try:
                await asyncio.wait_for(handle.execute_update("approve", args=args), timeout=20)
            except TimeoutError:
                raise
            except Exception as exc:
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
        failures = wft_failures(await handle.fetch_history())
        if (await hitl.status(request.decision_id)).status.is_open:
            valid = ApproveInput(reviewer="alice", request_id="fuzz-valid")
            assert (await approve(hitl, request.decision_id, valid)).accepted
        final = await hitl.wait(request.decision_id, timeout=30)
    summary("fuzz_updates", bad_inputs_tried=sum(outcomes.values()), outcomes=outcomes,
            workflow_task_failures=len(failures), final=final.status.value)
    assert failures == [], failures
    assert final.status in (DecisionStatus.EXECUTED, DecisionStatus.REJECTED)


def test_fuzz_figures() -> None:
    """Runs after the property tests in this module: their counts, for the summary."""
    summary("fuzz_models", requests_tried=TRIED["request"],
            request_texts_tried=TRIED["request_json"], policies_tried=TRIED["policy"],
            policy_files_tried=TRIED["policy_text"])
