"""AES-GCM payload codec: round trip, rotation, refusals, pass-through, settings."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from hitl.api.codec import parse_origins
from hitl.codec import (
    ENCODING,
    KEY_ID_METADATA,
    REFUSED_ENCODING,
    REFUSED_METADATA,
    CodecKeyError,
    EncryptionCodec,
    PayloadTampered,
    UnknownKeyId,
    codec_from_settings,
    generate_key,
    parse_keys,
)
from hitl.connection import data_converter
from hitl.errors import PAYLOAD_REFUSED_TYPE, InputError
from hitl.review import ApproveInput
from hitl.settings import Settings

SECRET = "Refund $12,000 to account Quokka-4410"


def _key() -> bytes:
    return base64.b64decode(generate_key())


def _plain(text: str = SECRET) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(text).encode())


def _settings(keys: str | None, key_id: str | None = None) -> Settings:
    return Settings(codec_keys=SecretStr(keys) if keys is not None else None,
                    codec_key_id=key_id)


# ------------------------------------------------------------------ the codec

async def test_round_trip_hides_the_content_and_restores_it() -> None:
    codec = EncryptionCodec({"k1": _key()}, current_key_id="k1")
    original = _plain()
    [encrypted] = await codec.encode([original])
    assert encrypted.metadata["encoding"] == ENCODING
    assert encrypted.metadata[KEY_ID_METADATA] == b"k1"
    assert set(encrypted.metadata) == {"encoding", KEY_ID_METADATA}  # json/plain is inside
    assert b"Quokka" not in encrypted.data and b"json/plain" not in encrypted.data
    assert len(encrypted.data) == 12 + len(original.SerializeToString()) + 16  # nonce, tag
    [decoded] = await codec.decode([encrypted])
    assert decoded == original


async def test_each_payload_gets_its_own_nonce() -> None:
    codec = EncryptionCodec({"k1": _key()}, current_key_id="k1")
    first, second = await codec.encode([_plain(), _plain()])
    assert first.data[:12] != second.data[:12] and first.data != second.data


async def test_rotation_old_key_decrypts_new_key_encrypts() -> None:
    old, new = _key(), _key()
    before = EncryptionCodec({"2025": old}, current_key_id="2025")
    after = EncryptionCodec({"2025": old, "2026": new}, current_key_id="2026")
    [written_before] = await before.encode([_plain("written before rotation")])
    [written_after] = await after.encode([_plain("written after rotation")])
    assert written_after.metadata[KEY_ID_METADATA] == b"2026"
    assert (await after.decode([written_before]))[0] == _plain("written before rotation")
    assert (await after.decode([written_after]))[0] == _plain("written after rotation")
    # A process still on the old key set cannot read the new key's payloads: it says so.
    with pytest.raises(UnknownKeyId, match="'2026'"):
        await before.decode([written_after])


async def test_unknown_key_id_raises() -> None:
    writer = EncryptionCodec({"gone": _key()}, current_key_id="gone")
    reader = EncryptionCodec({"k1": _key()}, current_key_id="k1")
    [encrypted] = await writer.encode([_plain()])
    with pytest.raises(UnknownKeyId, match="'gone'.*HITL_CODEC_KEYS"):
        await reader.decode([encrypted])


@pytest.mark.parametrize("where", ["ciphertext", "tag", "nonce", "truncated"])
async def test_tampered_ciphertext_raises(where: str) -> None:
    codec = EncryptionCodec({"k1": _key()}, current_key_id="k1")
    [encrypted] = await codec.encode([_plain()])
    data = bytearray(encrypted.data)
    if where == "truncated":
        data = data[:20]
    else:
        data[{"nonce": 0, "ciphertext": 14, "tag": -1}[where]] ^= 0x01
    tampered = Payload(metadata=dict(encrypted.metadata), data=bytes(data))
    with pytest.raises(PayloadTampered, match="integrity check"):
        await codec.decode([tampered])


async def test_relabelled_key_id_fails_the_tag_check() -> None:
    """The key ID is authenticated: moving a payload under another configured key
    fails, even where that key would otherwise be tried."""
    codec = EncryptionCodec({"a": _key(), "b": _key()}, current_key_id="a")
    [encrypted] = await codec.encode([_plain()])
    relabelled = Payload(metadata={**encrypted.metadata, KEY_ID_METADATA: b"b"},
                         data=encrypted.data)
    with pytest.raises(PayloadTampered):
        await codec.decode([relabelled])


async def test_wrong_key_material_under_the_same_id_raises() -> None:
    [encrypted] = await EncryptionCodec({"k1": _key()}, current_key_id="k1").encode([_plain()])
    with pytest.raises(PayloadTampered):
        await EncryptionCodec({"k1": _key()}, current_key_id="k1").decode([encrypted])


async def test_unencrypted_payloads_pass_through_decode_within_the_window() -> None:
    """Histories written before encryption was switched on still read, until the
    migration window (HITL_CODEC_ACCEPT_CLEAR_UNTIL) closes."""
    codec = EncryptionCodec({"k1": _key()}, current_key_id="k1",
                            accept_clear_until=datetime.now(UTC) + timedelta(hours=1))
    plain, binary = _plain(), Payload(metadata={"encoding": b"binary/null"})
    [encrypted] = await codec.encode([_plain("new")])
    assert await codec.decode([plain, encrypted, binary]) == [plain, _plain("new"), binary]


@pytest.mark.parametrize("until", [None, datetime.now(UTC) - timedelta(seconds=1)],
                         ids=["no-window", "window-closed"])
async def test_unencrypted_payloads_decode_to_a_refusal(until: datetime | None) -> None:
    """Refused without raising (that would fail the workflow task forever): the clear
    content is dropped, and converting the marker raises PayloadRefused."""
    codec = EncryptionCodec({"k1": _key()}, current_key_id="k1", accept_clear_until=until)
    [encrypted] = await codec.encode([_plain("new")])
    refused, decrypted = await codec.decode([_plain(), encrypted])
    assert decrypted == _plain("new")
    assert refused.metadata["encoding"] == REFUSED_ENCODING and refused.data == b""
    assert refused.metadata[REFUSED_METADATA] == b"json/plain"
    assert b"Quokka" not in refused.SerializeToString()
    converter = data_converter(_settings(f"k1={generate_key()}"))
    with pytest.raises(ApplicationError, match="arrived unencrypted") as caught:
        converter.payload_converter.from_payloads([refused], [ApproveInput])
    assert caught.value.type == PAYLOAD_REFUSED_TYPE and caught.value.non_retryable
    assert codec.decrypt(_plain()) == _plain()  # shown as it is (the codec server)


def test_the_window_needs_a_time_zone_and_keys() -> None:
    with pytest.raises(CodecKeyError, match="HITL_CODEC_ACCEPT_CLEAR_UNTIL: needs a time zone"):
        codec_from_settings(Settings(codec_keys=SecretStr(f"k1={generate_key()}"),
                                     codec_accept_clear_until=datetime(2030, 1, 1)))
    with pytest.raises(CodecKeyError, match="HITL_CODEC_ACCEPT_CLEAR_UNTIL is set but"):
        codec_from_settings(Settings(codec_accept_clear_until=datetime(2030, 1, 1, tzinfo=UTC)))


# ------------------------------------------------------------------ data converter

async def test_data_converter_encrypts_only_with_keys() -> None:
    assert data_converter() is pydantic_data_converter
    assert data_converter(Settings()) is pydantic_data_converter
    converter = data_converter(_settings(f"k1={generate_key()}"))
    assert isinstance(converter.payload_codec, EncryptionCodec)
    review = ApproveInput(reviewer="alice", reason=SECRET)
    [payload] = await converter.encode([review])
    assert payload.metadata["encoding"] == ENCODING and b"Quokka" not in payload.data
    assert await converter.decode([payload], [ApproveInput]) == [review]


async def test_failure_messages_are_encrypted_and_restored() -> None:
    """Failure messages can quote content: with keys they travel encrypted."""
    converter = data_converter(_settings(f"k1={generate_key()}"))
    failure = Failure()
    await converter.encode_failure(
        ApplicationError(f"target refused {SECRET}", type="ExecutionRejected"), failure)
    assert failure.message == "Encoded failure"
    assert b"Quokka" not in failure.SerializeToString()
    assert failure.application_failure_info.type == "ExecutionRejected"  # types stay in clear
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError)
    assert decoded.message == f"target refused {SECRET}" and decoded.type == "ExecutionRejected"


# ------------------------------------------------------------------ keys and settings

def test_generated_keys_are_256_bit_and_distinct() -> None:
    first, second = generate_key(), generate_key()
    assert first != second
    assert parse_keys(f"a={first},b={second}") == {"a": base64.b64decode(first),
                                                    "b": base64.b64decode(second)}


def test_parse_keys_accepts_url_safe_base64_without_padding() -> None:
    key = _key()
    text = base64.urlsafe_b64encode(key).decode().rstrip("=")
    assert parse_keys(f" k1 = {text} ,") == {"k1": key}


@pytest.mark.parametrize(("keys", "message"), [
    ("k1", "entry 1 must be id=base64key"),
    ("bad id=AAAA", "entry 1 must be id=base64key"),
    ("k1=not*base64!", "key 'k1' is not valid base64"),
    (f"k1={base64.b64encode(b'x' * 16).decode()}", "key 'k1' is 128 bits; AES-256 needs 256"),
    ("k1={k},k1={k}", "key ID 'k1' appears twice"),
    (" , ", "no keys"),
])
def test_bad_keys_name_the_setting_and_never_echo_key_material(keys: str, message: str) -> None:
    keys = keys.replace("{k}", generate_key())
    with pytest.raises(CodecKeyError) as caught:
        codec_from_settings(_settings(keys))
    assert str(caught.value).startswith("HITL_CODEC_KEYS: ") and message in str(caught.value)
    assert caught.value.field == "codec_keys" and isinstance(caught.value, InputError)
    assert "not*base64" not in str(caught.value) and "AAAA" not in str(caught.value)


def test_key_id_must_be_among_the_keys() -> None:
    with pytest.raises(CodecKeyError, match=r"^HITL_CODEC_KEY_ID: 'k3' is not among the keys "
                                            r"in HITL_CODEC_KEYS \(k1, k2\)") as caught:
        codec_from_settings(_settings(f"k1={generate_key()},k2={generate_key()}", "k3"))
    assert caught.value.field == "codec_key_id"


def test_key_id_required_with_several_keys_optional_with_one() -> None:
    with pytest.raises(CodecKeyError, match="HITL_CODEC_KEY_ID: required"):
        codec_from_settings(_settings(f"k1={generate_key()},k2={generate_key()}"))
    codec = codec_from_settings(_settings(f"only={generate_key()}"))
    assert codec is not None and codec.current_key_id == "only"
    rotated = codec_from_settings(_settings(f"k1={generate_key()},k2={generate_key()}", "k2"))
    assert rotated is not None and (rotated.current_key_id, rotated.key_ids) == ("k2",
                                                                                ("k1", "k2"))


def test_key_id_without_keys_is_an_error() -> None:
    with pytest.raises(CodecKeyError, match="HITL_CODEC_KEY_ID is set but HITL_CODEC_KEYS"):
        codec_from_settings(_settings(None, "k1"))
    assert codec_from_settings(Settings()) is None


def test_settings_read_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv("HITL_CODEC_KEYS", f"old={generate_key()},new={key}")
    monkeypatch.setenv("HITL_CODEC_KEY_ID", "new")
    settings = Settings()
    assert key not in repr(settings) and key not in str(settings.model_dump())
    codec = codec_from_settings(settings)
    assert codec is not None and codec.current_key_id == "new"


def test_cli_refuses_bad_keys_with_one_line_naming_the_setting(tmp_path: Path) -> None:
    """The entry point fails before connecting, exit 2, and never prints the key."""
    env = {**os.environ, "HITL_CODEC_KEYS": "k1=c2hvcnQta2V5LXNlY3JldA==",
           "HITL_TEMPORAL_ADDRESS": "127.0.0.1:1", "HITL_DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "hitl.cli", "status", "d-1"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "hitl: error: HITL_CODEC_KEYS: key 'k1' is 128 bits; AES-256 needs 256 "
        "(generate one with hitl.codec.generate_key())"]
    assert "c2hvcnQ" not in result.stderr + result.stdout


def test_cors_origins_are_validated() -> None:
    assert parse_origins("http://127.0.0.1:8233, https://UI.example.com") == [
        "http://127.0.0.1:8233", "https://ui.example.com"]
    assert parse_origins(None) == []
    for bad in ("127.0.0.1:8233", "http://ui.example.com/path", "ftp://ui", "http://"):
        with pytest.raises(InputError, match="^HITL_CODEC_CORS_ORIGINS: ") as caught:
            parse_origins(bad)
        assert caught.value.field == "codec_cors_origins"
