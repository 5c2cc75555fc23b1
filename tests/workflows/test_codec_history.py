"""Payload encryption on the real dev server: the history holds ciphertext, the UI path decodes.

Decisions run with a worker and client built from settings with codec keys; their
histories are then fetched with a client WITHOUT the codec, which sees what the
Temporal server and its database see. The codec server (the review API under
uvicorn on a real port) is then called as the Temporal UI calls it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from google.protobuf.json_format import MessageToDict, Parse
from google.protobuf.message import Message
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.api.common.v1 import Payload, Payloads, WorkflowExecution
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import History, HistoryEvent
from temporalio.api.workflowservice.v1 import ResetStickyTaskQueueRequest
from temporalio.client import Client

from hitl import search_attributes as sa
from hitl.api import create_app
from hitl.api.server import serving
from hitl.client import HitlClient
from hitl.codec import ENCODING, KEY_ID_METADATA, generate_key
from hitl.connection import data_converter
from hitl.devserver import DevServer
from hitl.enums import DecisionStatus, RiskLevel, Zone
from hitl.errors import ReviewRefused
from hitl.limits import MAX_BODY_BYTES
from hitl.request import DecisionRequest
from hitl.review import ApproveInput
from hitl.reviewers import add_reviewer, set_active
from hitl.settings import Settings
from hitl.state import DecisionState
from tests.conftest import BIN, WorkerFactory
from tests.factories import make_request
from tests.http_servers import Judge, LocalServer
from tests.reviewing import approve, signal
from workflows.decision import BOUND, FOLDED, FOLDED_BOUND, FOLDED_PATCHES

pytestmark = pytest.mark.timeout(90)

SECRET_OUTPUT = "Remove the post quoting Quokka-4410's home address"
SECRET_CONTEXT = "ticket body: Narwhal-8812 was charged twice"
SECRET_REASON = "checked with the customer, Axolotl-5521"
SECRETS = (SECRET_OUTPUT, SECRET_CONTEXT, SECRET_REASON, "Quokka", "Narwhal", "Axolotl",
           "requested this decision")  # the last: the refusal message of a self-approval
UI_ORIGIN = "http://127.0.0.1:8233"


@pytest.fixture
def codec_settings(task_queue: str, tmp_path: Path) -> Settings:
    """Rotated once: 'old' still decrypts, 'new' encrypts."""
    return Settings(task_queue=task_queue, data_dir=tmp_path,
                    codec_keys=SecretStr(f"old={generate_key()},new={generate_key()}"),
                    codec_key_id="new", codec_cors_origins=UI_ORIGIN)


@pytest.fixture
def codec_client(client: Client, codec_settings: Settings) -> Client:
    """The same connection as ``client`` (no codec), with the encrypting converter."""
    config = client.config()
    config["data_converter"] = data_converter(codec_settings)
    return Client(**config)


def _moderation(requested_by: str = "alice") -> DecisionRequest:
    """High risk and not confident: escalated to a person."""
    return make_request(
        decision_id=f"mod-{uuid.uuid4().hex[:10]}", task_type="content_moderation",
        outcome="remove", confidence=0.5, output=SECRET_OUTPUT,
        action={"type": "remove_post", "params": {"post_id": "p-1"}},
        context={"requested_by": requested_by, "ticket": SECRET_CONTEXT})


async def _until(predicate: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def _waiting(hitl: HitlClient, decision_id: str) -> None:
    async def pending() -> bool:
        return (await hitl.status(decision_id)).status is DecisionStatus.PENDING_REVIEW
    await _until(pending)


def _walk(message: Message, path: str, kind: type[Message]) -> Iterator[tuple[str, Message]]:
    """Every ``kind`` message inside ``message``, with its field path."""
    if isinstance(message, kind):
        yield path, message
        if kind is Payload:
            return
    for field, value in message.ListFields():
        name = f"{path}.{field.name}"
        if isinstance(value, Message):
            yield from _walk(value, name, kind)
        elif hasattr(value, "items"):  # a map; scalar maps hold no messages
            for key, item in value.items():
                if isinstance(item, Message):
                    yield from _walk(item, f"{name}[{key}]", kind)
        elif not isinstance(value, str | bytes | int | float):  # repeated (enums are ints)
            for index, item in enumerate(value):
                if isinstance(item, Message):
                    yield from _walk(item, f"{name}[{index}]", kind)


async def _raw_events(client: Client, decision_id: str) -> list[HistoryEvent]:
    history = await client.get_workflow_handle(decision_id).fetch_history()
    return list(history.events)


def _payloads(events: list[HistoryEvent]) -> list[tuple[str, Payload]]:
    found: list[tuple[str, Payload]] = []
    for event in events:
        for path, message in _walk(event, f"#{event.event_id}", Payload):
            assert isinstance(message, Payload)
            found.append((path, message))
    return found


def _is_search_attribute(path: str) -> bool:
    return ".search_attributes." in path


PATCHES = {FOLDED_BOUND, FOLDED, BOUND, *FOLDED_PATCHES}


def _is_sdk_marker_data(path: str, payload: Payload) -> bool:
    """The SDK core's own bookkeeping, written in clear: for a local activity its
    sequence number, activity type and times (beside the encrypted result); for a
    ``workflow.patched`` marker the patch's name. No content."""
    if "marker_recorded_event_attributes.details[data]" in path:
        data = json.loads(payload.data)
        assert set(data) >= {"seq", "activity_type"} and isinstance(data["seq"], int), data
        return True
    if "marker_recorded_event_attributes.details[patch-data]" in path:
        data = json.loads(payload.data)
        assert set(data) <= {"id", "deprecated"} and data["id"] in PATCHES, data
        return True
    return False


def _assert_encrypted_history(events: list[HistoryEvent], *, key_id: bytes = b"new") -> set[str]:
    """No content anywhere in the raw history; every payload but the search
    attributes encrypted with ``key_id``. Returns the kinds of place payloads sat in."""
    raw = b"".join(event.SerializeToString() for event in events)
    for secret in SECRETS:
        assert secret.encode() not in raw, f"{secret!r} is in the history in clear"
    places: set[str] = set()
    for path, payload in _payloads(events):
        if _is_search_attribute(path):
            assert payload.metadata.get("encoding") != ENCODING, path  # filterable by design
            continue
        if _is_sdk_marker_data(path, payload):
            continue
        assert payload.metadata.get("encoding") == ENCODING, f"{path} is not encrypted"
        assert payload.metadata.get(KEY_ID_METADATA) == key_id, path
        place = re.sub(r"\[[^]]*\]", "", path.split(".", 1)[1])
        places.add(place.removesuffix(".payloads"))
    for path, failure in _walk_failures(events):
        assert isinstance(failure, Failure)
        assert failure.message == "Encoded failure" and not failure.stack_trace, path
    return places


def _walk_failures(events: list[HistoryEvent]) -> Iterator[tuple[str, Message]]:
    for event in events:
        yield from _walk(event, f"#{event.event_id}", Failure)


async def test_history_on_the_server_holds_only_ciphertext(
        hitl_worker: WorkerFactory, codec_client: Client, client: Client,
        judge_server: tuple[LocalServer, Judge]) -> None:
    server, _ = judge_server
    async with hitl_worker(temporal=codec_client, judge_url=server.url) as hitl:
        auto = make_request(output=f"billing — {SECRET_OUTPUT}",
                            context={"ticket": SECRET_CONTEXT})
        auto_state = await hitl.decide(auto, timeout=30)
        assert auto_state.zone is Zone.AUTO and auto_state.status is DecisionStatus.EXECUTED

        escalated = _moderation(requested_by="alice")
        await hitl.submit(escalated)
        await _waiting(hitl, escalated.decision_id)
        with pytest.raises(ReviewRefused, match="alice requested this decision"):
            await approve(hitl, escalated.decision_id,  # an update, refused: a failure in history
                               ApproveInput(reviewer="alice", reason=SECRET_REASON))
        await signal(hitl, escalated.decision_id, "approve",
                          ApproveInput(reviewer="bob", reason=SECRET_REASON, request_id="sig-1"))
        state = await hitl.wait(escalated.decision_id, timeout=30)

    # The codec-using client reads everything back.
    assert (state.zone, state.risk, state.status) == (Zone.ESCALATE, RiskLevel.HIGH,
                                                     DecisionStatus.EXECUTED)
    assert [r.reason for r in state.reviews] == [SECRET_REASON, SECRET_REASON]
    assert [d.output for d in state.deliveries] == [SECRET_OUTPUT]
    assert state.reviews[0].refusal == "alice requested this decision and cannot approve it"
    described = await codec_client.get_workflow_handle(escalated.decision_id).describe()
    assert SECRET_CONTEXT in (await described.static_details() or "")

    # What the server holds, read without the codec.
    auto_places = _assert_encrypted_history(await _raw_events(client, auto.decision_id))
    events = await _raw_events(client, escalated.decision_id)
    places = _assert_encrypted_history(events)
    assert {"workflow_execution_started_event_attributes.input",
            "workflow_execution_started_event_attributes.memo.fields",
            "user_metadata.summary", "user_metadata.details",  # the UI's summary and details
            "activity_task_scheduled_event_attributes.input",  # the judge gets the output
            "activity_task_completed_event_attributes.result",
            "marker_recorded_event_attributes.details",  # local activities: rules, registry
            "workflow_execution_signaled_event_attributes.input",
            "workflow_execution_update_accepted_event_attributes.accepted_request.input.args",
            "workflow_execution_completed_event_attributes.result",
            # the refused update's message, moved out of the failure and encrypted
            "workflow_execution_update_completed_event_attributes.outcome.failure"
            ".encoded_attributes"} <= places | auto_places
    assert any("update_completed" in path for path, _ in _walk_failures(events))
    # ...and a plain client cannot read the result, rather than reading garbage.
    with pytest.raises(KeyError, match="Unknown payload encoding binary/encrypted"):
        await client.get_workflow_handle(escalated.decision_id,
                                         result_type=DecisionState).result()


async def test_search_attributes_stay_in_clear_and_hold_no_content(
        hitl_worker: WorkerFactory, codec_client: Client, client: Client) -> None:
    """Not encrypted by design (the UI and the queue filter on them): check what they hold."""
    async with hitl_worker(temporal=codec_client) as hitl:
        request = _moderation()
        await hitl.submit(request)
        await _waiting(hitl, request.decision_id)
        described = await client.get_workflow_handle(request.decision_id).describe()
        await signal(hitl, request.decision_id, "approve",
                          ApproveInput(reviewer="bob", reason="ok", request_id="s-1"))
        await hitl.wait(request.decision_id, timeout=30)
    attributes = described.typed_search_attributes
    ours = {pair.key.name for pair in attributes if pair.key.name.startswith("Hitl")}
    assert ours <= {key.name for key in sa.ALL} and sa.TASK_TYPE.name in ours
    assert attributes.get(sa.ZONE) == "escalate" and attributes.get(sa.RISK) == "high"
    assert all(secret not in str(pair.value) for pair in attributes for secret in SECRETS)


async def test_decisions_waiting_when_encryption_is_switched_on_still_finish(
        hitl_worker: WorkerFactory, codec_settings: Settings, client: Client) -> None:
    """A history begun in clear is replayed by an encrypting worker and continued
    encrypted: within HITL_CODEC_ACCEPT_CLEAR_UNTIL, decode lets payloads in clear in."""
    config = client.config()
    config["data_converter"] = data_converter(codec_settings.model_copy(update={
        "codec_accept_clear_until": datetime.now(UTC) + timedelta(hours=1)}))
    codec_client = Client(**config)
    request = _moderation()
    async with hitl_worker() as plain:  # before: no keys
        await plain.submit(request)
        await _waiting(plain, request.decision_id)
    before = len(await _raw_events(client, request.decision_id))
    # Hand the decision to the new worker now rather than after the old worker's sticky
    # queue times out (5 s per task): a restart does the same, only slower.
    await client.workflow_service.reset_sticky_task_queue(ResetStickyTaskQueueRequest(
        namespace=client.namespace, execution=WorkflowExecution(workflow_id=request.decision_id)))
    async with hitl_worker(temporal=codec_client) as hitl:  # after: the same task queue
        assert (await hitl.status(request.decision_id)).status is DecisionStatus.PENDING_REVIEW
        ack = await approve(hitl, request.decision_id,
                                 ApproveInput(reviewer="bob", reason=SECRET_REASON))
        assert ack.accepted
        state = await hitl.wait(request.decision_id, timeout=30)
    assert state.status is DecisionStatus.EXECUTED and state.reviews[0].reason == SECRET_REASON
    events = await _raw_events(client, request.decision_id)
    started = events[0].workflow_execution_started_event_attributes.input.payloads[0]
    assert started.metadata["encoding"] == b"json/plain"  # written before, left as it was
    assert SECRET_OUTPUT.encode() in started.data
    _assert_encrypted_history(events[before:])  # everything since: ciphertext


# ------------------------------------------------------------------ the codec server

@asynccontextmanager
async def _codec_server(hitl: HitlClient, engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(hitl=hitl, engine=engine, codec_cors_origins=[UI_ORIGIN])
    async with serving(app, host="127.0.0.1", port=0) as url, \
            httpx.AsyncClient(base_url=url, timeout=10) as http:
        yield http


async def _temporal_cli(*args: str) -> tuple[int | None, str, str]:
    """Run the temporal CLI without blocking this loop (it calls the codec server in it)."""
    process = await asyncio.create_subprocess_exec(
        str(BIN / "temporal"), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    return process.returncode, stdout.decode(), stderr.decode()


def _as_ui_sends(payloads: list[Payload]) -> dict[str, object]:
    """The body the Temporal UI posts: payloads in proto-JSON (base64) form."""
    return MessageToDict(Payloads(payloads=payloads))


async def test_codec_server_decodes_for_reviewers_only(
        hitl_worker: WorkerFactory, codec_client: Client, client: Client,
        sqlite_engine: Engine) -> None:
    with Session(sqlite_engine) as session:
        token = add_reviewer(session=session, name="ops", risks=[RiskLevel.LOW])[1]
        gone = add_reviewer(session=session, name="gone", risks=list(RiskLevel))[1]
        set_active(session=session, name="gone", active=False)
    async with hitl_worker(temporal=codec_client) as hitl:
        request = make_request(output=SECRET_OUTPUT, context={"ticket": SECRET_CONTEXT})
        await hitl.decide(request, timeout=30)
        events = await _raw_events(client, request.decision_id)
        started = events[0].workflow_execution_started_event_attributes
        raw = [*started.input.payloads, *started.memo.fields.values(),
               events[0].user_metadata.details]
        body = _as_ui_sends(raw)
        assert SECRET_CONTEXT not in str(body)

        async with _codec_server(hitl, sqlite_engine) as http:
            ui = {"Origin": UI_ORIGIN, "X-Namespace": client.namespace}
            decoded = await http.post("/codec/decode", json=body,
                                      headers={**ui, "Authorization": f"Bearer {token}"})
            assert decoded.status_code == 200, decoded.text
            assert decoded.headers["access-control-allow-origin"] == UI_ORIGIN
            assert decoded.headers["access-control-allow-credentials"] == "true"
            plain = [Payload(metadata={k: _b64(v) for k, v in p["metadata"].items()},
                             data=_b64(p["data"])) for p in decoded.json()["payloads"]]
            assert [p.metadata["encoding"] for p in plain] == [b"json/plain"] * 3
            [as_request] = await data_converter().decode(plain[:1], [DecisionRequest])
            assert as_request == request
            assert SECRET_CONTEXT.encode() in plain[2].data  # the static details

            # Refused: no token, a wrong one, a disabled reviewer, another namespace.
            for headers, code in (({}, 401), ({"Authorization": "Bearer hitl_nope"}, 401),
                                  ({"Authorization": f"Bearer {gone}"}, 401),
                                  ({"Authorization": f"Bearer {token}",
                                    "X-Namespace": "elsewhere"}, 403)):
                refused = await http.post("/codec/decode", json=body, headers={**ui, **headers})
                assert refused.status_code == code, (headers, refused.text)
                assert "Quokka" not in refused.text and "Narwhal" not in refused.text
                # CORS headers on refusals too, so the UI can tell "sign in" from "down".
                assert refused.headers["access-control-allow-origin"] == UI_ORIGIN

            # The review page's session cookie works as well (the UI's "include credentials").
            signed_in = await http.post("/api/session", json={"token": token})
            assert signed_in.status_code == 200, signed_in.text
            by_cookie = await http.post("/codec/decode", json=body, headers=ui)
            assert by_cookie.status_code == 200 and by_cookie.json() == decoded.json()
            http.cookies.clear()

            # Encode is the inverse, with the current key.
            encoded = await http.post("/codec/encode", json=_as_ui_sends(plain[:1]),
                                      headers={"Authorization": f"Bearer {token}"})
            assert encoded.status_code == 200, encoded.text
            [sealed] = encoded.json()["payloads"]
            assert _b64(sealed["metadata"][KEY_ID_METADATA]) == b"new"
            assert await codec_client.data_converter.decode(
                [Payload(metadata={k: _b64(v) for k, v in sealed["metadata"].items()},
                         data=_b64(sealed["data"]))], [DecisionRequest]) == [request]

            # The temporal CLI, a real client of the remote codec protocol, reads it in clear.
            show = ("workflow", "show", "-w", request.decision_id, "--output", "json",
                    "--address", client.service_client.config.target_host,
                    "--codec-endpoint", f"{http.base_url}/codec")
            code, shown, _ = await _temporal_cli(*show, "--codec-auth", f"Bearer {token}")
            assert code == 0
            cli_events = list(Parse(shown, History(), ignore_unknown_fields=True).events)
            assert len(cli_events) == len(events)
            cli_payloads = [p for path, p in _payloads(cli_events)
                            if not _is_search_attribute(path)]
            assert len(cli_payloads) == len(_payloads(events)) - sum(
                _is_search_attribute(path) for path, _ in _payloads(events))
            assert all(p.metadata["encoding"] != ENCODING for p in cli_payloads)
            cli_input = cli_events[0].workflow_execution_started_event_attributes.input
            assert (await data_converter().decode(cli_input.payloads, [DecisionRequest])
                    == [request])
            # No credentials: the CLI gets 401s and shows nothing rather than ciphertext.
            code, nothing, _ = await _temporal_cli(*show, "--command-timeout", "2s")
            assert code != 0 and "Quokka" not in nothing

            # Tampered ciphertext is an error naming the payload, never garbage.
            tampered = _as_ui_sends([Payload(metadata=raw[0].metadata,
                                             data=raw[0].data[:-1] + b"\x00")])
            broken = await http.post("/codec/decode", json=tampered,
                                     headers={"Authorization": f"Bearer {token}"})
            assert broken.status_code == 422 and "payloads.0" in broken.json()["detail"]


async def test_codec_server_cors_preflight(hitl_worker: WorkerFactory, codec_client: Client,
                                           client: Client, sqlite_engine: Engine) -> None:
    async with hitl_worker(temporal=codec_client) as hitl, \
            _codec_server(hitl, sqlite_engine) as http:
        request_headers = {"Access-Control-Request-Method": "POST",
                           "Access-Control-Request-Headers": "authorization,content-type,"
                                                             "x-namespace"}
        for path in ("/codec/decode", "/codec/encode"):
            allowed = await http.options(path, headers={"Origin": UI_ORIGIN, **request_headers})
            assert allowed.status_code == 204, allowed.text
            assert allowed.headers["access-control-allow-origin"] == UI_ORIGIN
            assert allowed.headers["access-control-allow-credentials"] == "true"
            granted = {h.strip().lower()
                       for h in allowed.headers["access-control-allow-headers"].split(",")}
            assert {"authorization", "content-type", "x-namespace"} <= granted
            assert "POST" in allowed.headers["access-control-allow-methods"]

            other = await http.options(path, headers={"Origin": "http://evil.example",
                                                      **request_headers})
            assert other.status_code == 403
            assert "access-control-allow-origin" not in other.headers
        # A simple POST from another origin gets no CORS grant: its page cannot read it.
        stranger = await http.post("/codec/decode", json={"payloads": []},
                                   headers={"Origin": "http://evil.example"})
        assert stranger.status_code == 401
        assert "access-control-allow-origin" not in stranger.headers


async def test_codec_server_is_mounted_only_with_keys(hitl_worker: WorkerFactory,
                                                      sqlite_engine: Engine) -> None:
    async with hitl_worker() as plain, _codec_server(plain, sqlite_engine) as http:
        assert (await http.post("/codec/decode", json={"payloads": []})).status_code == 404
        assert (await http.get("/healthz")).status_code == 200


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_dev_server_points_its_ui_at_the_codec_server(tmp_path: Path) -> None:
    """What ``hitl up`` starts with keys set: the UI learns the codec endpoint."""
    endpoint = "http://127.0.0.1:8000/codec"
    server = DevServer(data_dir=tmp_path, port=_free_port(), ui_port=_free_port(),
                       ui_codec_endpoint=endpoint)
    await asyncio.to_thread(server.start)
    try:
        async with httpx.AsyncClient(base_url=server.ui_url, timeout=5) as http:
            for _ in range(100):  # the UI listens shortly after the frontend
                with contextlib.suppress(httpx.TransportError):
                    settings = await http.get("/api/v1/settings")
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"the Temporal UI did not answer on {server.ui_url}")
            assert settings.status_code == 200
            assert settings.json()["Codec"]["Endpoint"] == endpoint
    finally:
        await asyncio.to_thread(server.stop)
    assert "--ui-codec-endpoint" not in DevServer(data_dir=tmp_path).command()


async def test_codec_server_takes_the_uis_large_batches_and_shows_clear_payloads(
        hitl_worker: WorkerFactory, codec_client: Client, client: Client,
        sqlite_engine: Engine) -> None:
    """The API refuses bodies over MAX_BODY_BYTES; the codec server's are larger (the UI
    sends whole events, payloads of up to 2 MiB, base64). A payload in clear is shown as
    it is: the workers refuse to act on one, showing it reveals nothing the server lacks."""
    with Session(sqlite_engine) as session:
        token = add_reviewer(session=session, name="ops", risks=[RiskLevel.LOW])[1]
    big = "x" * (MAX_BODY_BYTES + 100_000)
    encrypted = await codec_client.data_converter.encode([big])
    clear = Payload(metadata={"encoding": b"json/plain"}, data=b'"sent in clear"')
    body = _as_ui_sends([*encrypted, clear])
    async with hitl_worker(temporal=codec_client) as hitl, \
            _codec_server(hitl, sqlite_engine) as http:
        decoded = await http.post("/codec/decode", json=body, headers={
            "X-Namespace": client.namespace, "Authorization": f"Bearer {token}"})
        assert decoded.status_code == 200, decoded.text[:300]
        plain = [Payload(metadata={k: _b64(v) for k, v in p["metadata"].items()},
                         data=_b64(p["data"])) for p in decoded.json()["payloads"]]
        assert await data_converter().decode(plain[:1], [str]) == [big]
        assert plain[1] == clear
        refused = await http.post("/api/decisions", content=json.dumps({"output": big}),
                                  headers={"Content-Type": "application/json"})
        assert refused.status_code == 413
