"""The ``hitl`` command as a user runs it: a subprocess against the real dev server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from hitl.enums import DecisionStatus
from tests.conftest import BIN, WorkerFactory
from tests.factories import make_request
from tests.reviewing import token_for

pytestmark = pytest.mark.timeout(90)


async def hitl(*args: str | bytes, env: dict[str, str],
               stdin: str | bytes | None = None) -> tuple[int, str, str]:
    """``hitl ARGS`` as a subprocess (arguments may be bytes: not every one is UTF-8)."""
    process = await asyncio.create_subprocess_exec(
        str(BIN / "hitl"), *args, env={**os.environ, **env},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate(stdin.encode() if isinstance(stdin, str) else stdin)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def cli_env(client: Client, task_queue: str, tmp_path: Path) -> dict[str, str]:
    return {"HITL_TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "HITL_NAMESPACE": client.namespace, "HITL_TASK_QUEUE": task_queue,
            "HITL_DATA_DIR": str(tmp_path)}


async def _absent(client: Client, decision_id: str) -> bool:
    from temporalio.service import RPCError

    try:
        await client.get_workflow_handle(decision_id).describe()
    except RPCError:
        return True
    return False


@pytest.mark.parametrize(("patch", "field"), [
    ({"confidence": 1.5}, "confidence"),
    ({"confidence": "NaN"}, "confidence"),
    ({"decision_id": "has space"}, "decision_id"),
    ({"action": {"type": "x", "target_url": "ftp://x"}}, "action.target_url"),
    ({"context": {"amount": -5}}, "context.amount"),
    ({"surprise": 1}, "surprise"),
])
async def test_bad_request_exits_2_naming_the_field_and_starts_nothing(
        cli_env: dict[str, str], client: Client, tmp_path: Path,
        patch: dict[str, object], field: str) -> None:
    data = json.loads(make_request().model_dump_json())
    data.update(patch)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    code, out, err = await hitl("submit", str(path), env=cli_env)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and field in err and err.startswith("hitl: error:")
    assert await _absent(client, str(data["decision_id"]))


async def test_not_json_and_missing_file_exit_2(cli_env: dict[str, str], tmp_path: Path) -> None:
    code, _, err = await hitl("submit", "-", env=cli_env, stdin="{not json")
    assert code == 2 and "invalid decision request" in err
    code, _, err = await hitl("submit", str(tmp_path / "nope.json"), env=cli_env)
    assert code == 2 and "nope.json" in err


async def test_submit_status_queue_approve_round_trip(cli_env: dict[str, str],
                                                      hitl_worker: WorkerFactory) -> None:
    # Its own task type: other tests' decisions still pending on the shared server stay out.
    task_type = f"cli_{uuid.uuid4().hex[:8]}"
    request = make_request(confidence=0.4, task_type=task_type)
    async with hitl_worker():
        code, out, err = await hitl("submit", "-", "--json", env=cli_env,
                                    stdin=request.model_dump_json())
        assert code == 0, err
        submitted = json.loads(out)
        assert submitted["zone"] == "queue" and submitted["status"] == "pending_review"

        code, out, _ = await hitl("submit", "-", env=cli_env, stdin=request.model_dump_json())
        assert code == 0 and "already submitted" in out

        for source in ("store", "temporal"):
            for _ in range(100):  # the queue table and visibility catch up within moments
                code, out, _ = await hitl("queue", "--json", "--task-type", task_type,
                                          "--source", source, env=cli_env)
                if request.decision_id in out:
                    break
                await asyncio.sleep(0.1)
            listed = json.loads(out)
            assert [i["decision_id"] for i in listed] == [request.decision_id], source
            assert listed[0]["zone"] == "queue" and listed[0]["status"] == "pending_review"

        # The content up for approval and its digest, as a reviewer reads them.
        code, out, _ = await hitl("status", request.decision_id, env=cli_env)
        [line] = [line for line in out.splitlines() if line.startswith("content")]
        digest = re.search(r"--digest ([0-9a-f]{16})", line)
        assert code == 0 and digest is not None, out
        code, out, err = await hitl("reject", request.decision_id, "--reviewer", "rita",
                                    "--reason", "x", "--category", "bogus", "--digest",
                                    digest.group(1), env={**cli_env, "HITL_REVIEWER_TOKEN":
                                                          token_for("rita")})
        assert code == 2 and "error_category" in err

        code, out, err = await hitl("approve", request.decision_id, "--reviewer", "alice",
                                    "--reason", "looks right", "--digest", digest.group(1),
                                    env={**cli_env, "HITL_REVIEWER_TOKEN": token_for("alice")})
        assert code == 0 and "approve accepted" in out, err

        for _ in range(100):
            code, out, _ = await hitl("status", request.decision_id, "--json", env=cli_env)
            if json.loads(out)["status"] == DecisionStatus.EXECUTED.value:
                break
            await asyncio.sleep(0.1)
        state = json.loads(out)
        assert state["status"] == "executed" and state["reviews"][0]["reviewer"] == "alice"

        code, out, _ = await hitl("status", request.decision_id, env=cli_env)
        assert code == 0 and "executed" in out and "approve by alice" in out


async def test_unknown_decision_exits_2(cli_env: dict[str, str]) -> None:
    code, out, err = await hitl("status", f"nope-{uuid.uuid4().hex[:8]}", env=cli_env)
    assert code == 2 and out == "" and "no decision with ID" in err


async def test_unreachable_temporal_exits_1_with_one_line(tmp_path: Path) -> None:
    code, _, err = await hitl("status", "x", env={"HITL_TEMPORAL_ADDRESS": "127.0.0.1:1"})
    assert code == 1 and err.strip().count("\n") == 0 and "cannot reach Temporal" in err


async def test_worker_refuses_an_unknown_inactive_patch_before_connecting(
        tmp_path: Path) -> None:
    code, out, err = await hitl("worker", env={
        "HITL_TEMPORAL_ADDRESS": "127.0.0.1:1", "HITL_DATA_DIR": str(tmp_path),
        "HITL_INACTIVE_PATCHES": "folded-2026-11,fold-2026-11"})
    assert code == 2 and out == "" and err.strip().count("\n") == 0, err
    assert "HITL_INACTIVE_PATCHES: unknown patch 'fold-2026-11'" in err
    assert not (tmp_path / "hitl.db").exists()  # nothing started, nothing written


async def test_worker_refuses_a_bad_outbound_allowlist_before_connecting(
        tmp_path: Path) -> None:
    code, out, err = await hitl("worker", env={
        "HITL_TEMPORAL_ADDRESS": "127.0.0.1:1", "HITL_DATA_DIR": str(tmp_path),
        "HITL_OUTBOUND_ALLOW_HOSTS": "hooks.internal,*"})
    assert code == 2 and out == "" and err.strip().count("\n") == 0, err
    assert "HITL_OUTBOUND_ALLOW_HOSTS: '*' is not a host name" in err
    assert not (tmp_path / "hitl.db").exists()  # nothing started, nothing written


async def test_policy_check(tmp_path: Path) -> None:
    code, out, _ = await hitl("policy", env={})
    assert code == 0 and out.startswith("ok\tdefault-1+")
    bad = tmp_path / "policy.toml"
    bad.write_text('version = "x"\n[thresholds.by_risk]\nlow = 0.7\nmedium = 0.8\n'
                   'high = 1.5\ncritical = 0.99\n')
    code, out, err = await hitl("policy", str(bad), env={})
    assert code == 2 and "thresholds.by_risk.high" in err


async def test_reviewers_add_list_disable(tmp_path: Path) -> None:
    env = {"HITL_DATA_DIR": str(tmp_path)}
    code, out, err = await hitl("reviewers", "add", "alice", "--risks", "low,high", "--json",
                                env=env)
    assert code == 0, err
    created = json.loads(out)
    assert created["risks"] == "low,high" and created["token"].startswith("hitl_")
    assert created["token"] not in (tmp_path / "hitl.db").read_bytes().decode(errors="ignore")
    code, _, err = await hitl("reviewers", "add", "alice", env=env)
    assert code == 2 and "already exists" in err
    code, _, err = await hitl("reviewers", "add", "bob", "--risks", "low,severe", env=env)
    assert code == 2 and "risks" in err and "severe" in err
    code, out, _ = await hitl("reviewers", "disable", "alice", env=env)
    assert code == 0 and "active=False" in out
    code, out, _ = await hitl("reviewers", "list", "--json", env=env)
    assert json.loads(out) == [{"name": "alice", "risks": "low,high", "active": False}]


async def test_submit_wait_timeout_exits_3_and_the_decision_goes_on(
        cli_env: dict[str, str], client: Client, hitl_worker: WorkerFactory) -> None:
    request = make_request(confidence=0.4, task_type=f"cli_{uuid.uuid4().hex[:8]}")
    async with hitl_worker():
        code, out, err = await hitl("submit", "-", "--wait", "--timeout", "1", env=cli_env,
                                    stdin=request.model_dump_json())
        assert code == 3 and out == "", err
        assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("hitl: ")
        assert f"decision {request.decision_id} not finished after 1s" in err
        assert re.search(r"\(status (screening|pending_review)\)", err), err
        assert f"hitl status {request.decision_id}" in err

        code, out, err = await hitl("status", request.decision_id, "--json", env=cli_env)
        assert code == 0, err
        assert json.loads(out)["status"] == DecisionStatus.PENDING_REVIEW.value
        description = await client.get_workflow_handle(request.decision_id).describe()
        assert description.status == WorkflowExecutionStatus.RUNNING
