"""Bad files and arguments on the command line: exit 2 with one line, nothing sent.

The ``hitl`` command as a user runs it (a subprocess), against the real dev server
so that "nothing started" is checked where it would have started. Each file path
that reads a caller's file is covered: ``submit FILE`` and ``submit -``, ``policy
FILE``, ``policy check FILE`` and ``policy propose FILE``, ``calibrate --input``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import Client

from hitl.limits import MAX_BODY_BYTES, MAX_OUTPUT_BYTES
from tests.factories import make_request
from tests.hitl.test_cli import _absent, cli_env, hitl

pytestmark = pytest.mark.timeout(90)
__all__ = ["cli_env"]  # a fixture, used by name


def _one_line(code: int, out: str, err: str, *words: str) -> None:
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and err.startswith("hitl"), err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err


def _request_bytes() -> tuple[str, bytes]:
    request = make_request()
    return request.decision_id, request.model_dump_json().encode()


async def test_a_request_file_that_is_not_utf8(cli_env: dict[str, str], client: Client,
                                               tmp_path: Path) -> None:
    decision_id, data = _request_bytes()
    path = tmp_path / "latin1.json"
    path.write_bytes(data.replace(b'"billing"', b'"factur\xe9"', 1))
    _one_line(*await hitl("submit", str(path), env=cli_env), "not UTF-8", "0xe9")
    assert await _absent(client, decision_id)


async def test_a_request_over_the_size_limit_is_not_read_nor_sent(
        cli_env: dict[str, str], client: Client, tmp_path: Path) -> None:
    decision_id, data = _request_bytes()
    big = data[:-1] + b" " * MAX_BODY_BYTES + b"}"  # valid JSON, only too big
    path = tmp_path / "big.json"
    path.write_bytes(big)
    _one_line(*await hitl("submit", str(path), env=cli_env), f"over {MAX_BODY_BYTES} bytes")
    _one_line(*await hitl("submit", "-", env=cli_env, stdin=big), f"over {MAX_BODY_BYTES}")
    assert await _absent(client, decision_id)


async def test_a_field_over_its_limit_or_not_finite_names_it(
        cli_env: dict[str, str], client: Client, tmp_path: Path) -> None:
    decision_id, data = _request_bytes()
    document = json.loads(data)
    document["output"] = "\U0001F600" * (MAX_OUTPUT_BYTES // 4) + "x"  # one byte over
    path = tmp_path / "long.json"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    _one_line(*await hitl("submit", str(path), env=cli_env), "output", "bytes")
    assert await _absent(client, decision_id)

    decision_id, data = _request_bytes()
    document = json.loads(data)
    document["action"]["params"]["limit"] = float("nan")
    path.write_text(json.dumps(document))  # Python writes NaN, as many tools do
    _one_line(*await hitl("submit", str(path), env=cli_env), "action.params.limit", "finite")
    assert await _absent(client, decision_id)


@pytest.mark.parametrize("command", [("policy",), ("policy", "check"),
                                     ("policy", "propose", "--by", "ops")])
async def test_policy_files_not_utf8_or_too_big(tmp_path: Path, command: tuple[str, ...]) -> None:
    env = {"HITL_DATA_DIR": str(tmp_path)}
    latin = tmp_path / "latin1.toml"
    latin.write_bytes(b'version = "caf\xe9"\n')
    _one_line(*await hitl(*command, str(latin), env=env), "not UTF-8")
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_BODY_BYTES + 1))
    _one_line(*await hitl(*command, str(big), env=env), f"over {MAX_BODY_BYTES} bytes")


async def test_labeled_data_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(b"confidence,correct\n0.9,tru\xe9\n")
    _one_line(*await hitl("calibrate", "--input", str(path), env={}), "not UTF-8")


async def test_an_argument_that_is_not_utf8(cli_env: dict[str, str]) -> None:
    _one_line(*await hitl(b"status", b"d-\xff", env=cli_env), "argument 2 is not UTF-8")
    _one_line(*await hitl(b"approve", b"d-1", b"--reviewer", b"bob", b"--reason", b"caf\xe9",
                          env=cli_env), "argument 6 is not UTF-8")


@pytest.mark.parametrize("command", [("queue",), ("audits", "pending")])
async def test_a_limit_past_any_store_integer_is_refused(tmp_path: Path,
                                                         command: tuple[str, ...]) -> None:
    code, out, err = await hitl(*command, "--limit", "100000000000000000000",
                                env={"HITL_DATA_DIR": str(tmp_path)})
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert err.splitlines()[-1].endswith("--limit: must be between 1 and 1000000000")
