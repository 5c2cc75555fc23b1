"""Payload encryption: AES-256-GCM, so Temporal's server and its database hold only ciphertext.

A decision's output, context, reviews and results travel as Temporal payloads
and are stored in its history. With ``HITL_CODEC_KEYS`` set, every client and
worker built by ``hitl.connection`` encrypts each payload before it leaves the
process and decrypts it on the way in; the server never holds a key.

Format of an encrypted payload:

- metadata ``encoding`` = ``binary/encrypted`` and ``encryption-key-id`` = the key's ID;
- data = a random 96-bit nonce, then the AES-GCM ciphertext and tag of the original
  payload (metadata and data, protobuf-serialized), authenticated together with the
  key ID, so a payload re-labelled with another key ID fails its tag check.

Rotation: new payloads are encrypted with the current key (``HITL_CODEC_KEY_ID``);
decryption picks the key named in the payload, so every key still listed in
``HITL_CODEC_KEYS`` keeps old histories readable. Remove a key only once no
retained history was written with it.

A payload that arrives in clear is refused: only a holder of the keys writes payloads
hitl acts on, so a signal or update sent by a tool without the codec (``temporal
workflow signal``) cannot approve anything, nor can a workflow be started that way.
Raising from ``decode`` would fail the workflow task, which the SDK retries forever,
wedging the decision; so ``decode`` hands on a refusal marker instead (encoding
``binary/refused-unencrypted``, the clear content dropped) that the payload converter
(``RefusingPayloadConverter``) refuses to convert, with ``PayloadRefused``. What that does
is the SDK's: a signal's arguments that do not convert drop the signal (logged), the
decision goes on; an update is rejected before it reaches history; a workflow start
fails that workflow.

``HITL_CODEC_ACCEPT_CLEAR_UNTIL`` (an ISO 8601 instant with a time zone) accepts payloads in clear
until then, for switching encryption on with decisions running: their histories began
in clear. Set it past the end of the last decision that may meet a clear payload (its
hard deadline): a payload accepted in clear and refused when its decision is replayed
after the instant changes what the replay does. The codec server (``hitl.api.codec``)
shows clear payloads as they are: showing is not acting on them. Anything that claims
to be encrypted but cannot be decrypted raises, never decodes to garbage.

Search attributes are not payloads and are not encrypted: the UI and the queue
filter on them, so they hold only task type, risk, zone, status, confidence, SLA
deadline and priority, never a decision's content.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from pydantic import TypeAdapter
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter, PydanticPayloadConverter
from temporalio.converter import CompositePayloadConverter, EncodingPayloadConverter, PayloadCodec
from temporalio.exceptions import ApplicationError

from hitl.errors import PAYLOAD_REFUSED_TYPE, HitlError, InputError
from hitl.request import STORED

if TYPE_CHECKING:
    from hitl.settings import Settings

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, GCM's native nonce size
KEYS_SETTING = "HITL_CODEC_KEYS"
KEY_ID_SETTING = "HITL_CODEC_KEY_ID"
ACCEPT_CLEAR_SETTING = "HITL_CODEC_ACCEPT_CLEAR_UNTIL"
REFUSED_ENCODING = b"binary/refused-unencrypted"
REFUSED_METADATA = "refused-encoding"  # the clear payload's own encoding, for the record
REFUSAL = ("refused a payload that arrived unencrypted: with HITL_CODEC_KEYS set, hitl acts "
           "only on payloads encrypted with its keys (a tool without the codec, such as "
           "`temporal workflow signal`, cannot reach a decision; HITL_CODEC_ACCEPT_CLEAR_UNTIL "
           "accepts clear payloads while switching encryption on)")
log = logging.getLogger("hitl.codec")
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class CodecError(HitlError):
    """An encrypted payload that cannot be decrypted; nothing is returned for it."""


class UnknownKeyId(CodecError):
    """The payload names a key that is not configured (removed too early, or another
    deployment's)."""


class PayloadTampered(CodecError):
    """The tag check failed: wrong key material under that ID, or altered ciphertext."""


class CodecKeyError(InputError, ValueError):
    """The codec settings (``HITL_CODEC_KEYS``, ``HITL_CODEC_KEY_ID``,
    ``HITL_CODEC_ACCEPT_CLEAR_UNTIL``) do not validate. Messages name the setting and
    the key ID, never key material."""


def generate_key() -> str:
    """A new random 256-bit key, base64 (for ``HITL_CODEC_KEYS``: ``id=<this>``)."""
    return base64.b64encode(AESGCM.generate_key(bit_length=KEY_BYTES * 8)).decode()


def parse_keys(text: str) -> dict[str, bytes]:
    """``id=base64key[,id=base64key...]`` as ``{key ID: 32-byte key}``."""
    keys: dict[str, bytes] = {}
    for position, item in enumerate((part.strip() for part in text.split(",")), start=1):
        if not item:
            continue
        key_id, sep, encoded = item.partition("=")
        key_id = key_id.strip()
        if not sep or not _KEY_ID.match(key_id):
            raise CodecKeyError(
                f"{KEYS_SETTING}: entry {position} must be id=base64key with an ID of "
                "letters, digits, '.', '_' or '-' (at most 64)", field="codec_keys")
        if key_id in keys:
            raise CodecKeyError(f"{KEYS_SETTING}: key ID {key_id!r} appears twice",
                                field="codec_keys")
        keys[key_id] = _decode_key(key_id, encoded.strip())
    if not keys:
        raise CodecKeyError(f"{KEYS_SETTING}: no keys (expected id=base64key[,...])",
                            field="codec_keys")
    return keys


def _decode_key(key_id: str, encoded: str) -> bytes:
    # Standard or URL-safe alphabet, padding optional: whatever a key tool printed.
    normalized = encoded.replace("-", "+").replace("_", "/")
    normalized += "=" * (-len(normalized) % 4)
    try:
        key = base64.b64decode(normalized, validate=True)
    except (binascii.Error, ValueError):
        raise CodecKeyError(f"{KEYS_SETTING}: key {key_id!r} is not valid base64",
                            field="codec_keys") from None
    if len(key) != KEY_BYTES:
        raise CodecKeyError(
            f"{KEYS_SETTING}: key {key_id!r} is {len(key) * 8} bits; AES-256 needs "
            f"{KEY_BYTES * 8} (generate one with hitl.codec.generate_key())",
            field="codec_keys")
    return key


class EncryptionCodec(PayloadCodec):
    """AES-GCM over whole payloads; encrypts with one key, decrypts with any known one."""

    def __init__(self, keys: Mapping[str, bytes], *, current_key_id: str,
                 accept_clear_until: datetime | None = None) -> None:
        if current_key_id not in keys:
            known = ", ".join(sorted(keys)) or "none"
            raise CodecKeyError(f"{KEY_ID_SETTING}: {current_key_id!r} is not among the keys "
                                f"in {KEYS_SETTING} ({known})", field="codec_key_id")
        for key_id, key in keys.items():
            if len(key) != KEY_BYTES:
                raise CodecKeyError(f"{KEYS_SETTING}: key {key_id!r} must be {KEY_BYTES} bytes",
                                    field="codec_keys")
        if accept_clear_until is not None and accept_clear_until.utcoffset() is None:
            raise CodecKeyError(f"{ACCEPT_CLEAR_SETTING}: needs a time zone (2026-12-31T00:00Z)",
                                field="codec_accept_clear_until")
        self.current_key_id = current_key_id
        self.accept_clear_until = accept_clear_until
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.admit(payload) for payload in payloads]

    def admit(self, payload: Payload) -> Payload:
        """What a worker or client may act on: the decrypted payload; one in clear only
        until ``accept_clear_until``, else a refusal marker that converts to nothing."""
        if payload.metadata.get("encoding") == ENCODING:
            return self.decrypt(payload)
        if self.accept_clear_until is not None and datetime.now(UTC) < self.accept_clear_until:
            return payload
        encoding = payload.metadata.get("encoding", b"")
        log.warning("refused a payload that arrived unencrypted", extra={
            "encoding": encoding.decode(errors="replace")[:100], "bytes": len(payload.data)})
        return Payload(metadata={"encoding": REFUSED_ENCODING, REFUSED_METADATA: encoding[:100]})

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.current_key_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(
            nonce, payload.SerializeToString(deterministic=True), _associated_data(key_id))
        return Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()},
                       data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        """The original payload; unencrypted ones are returned as they are (to show,
        not to act on: ``admit`` decides that)."""
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownKeyId(
                f"payload encrypted with key {key_id!r}, which is not in {KEYS_SETTING} "
                f"(configured: {', '.join(self._ciphers)})")
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = cipher.decrypt(nonce, sealed, _associated_data(key_id))
        except InvalidTag:
            raise PayloadTampered(
                f"payload encrypted with key {key_id!r} failed its integrity check "
                "(altered, or a different key under that ID)") from None
        try:
            return Payload.FromString(plain)
        except DecodeError:  # authentic but not a payload: only a foreign writer does this
            raise PayloadTampered(
                f"payload encrypted with key {key_id!r} does not hold a payload") from None


def _associated_data(key_id: str) -> bytes:
    return ENCODING + b"/" + key_id.encode()


class RefusedPayloadConverter(EncodingPayloadConverter):
    """Converts the codec's refusal marker to ``PayloadRefused``, and nothing to it.

    An ``ApplicationError``, so that a workflow start refused this way fails that
    workflow (the SDK fails the workflow, not the task, for such an error raised while
    converting its input); a signal is dropped and an update rejected either way."""

    @property
    def encoding(self) -> str:
        return REFUSED_ENCODING.decode()

    def to_payload(self, value: Any) -> Payload | None:
        return None

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        raise ApplicationError(REFUSAL, type=PAYLOAD_REFUSED_TYPE, non_retryable=True)


class StoredJSONConverter(PydanticJSONPlainPayloadConverter):
    """The pydantic JSON converter, validating what it reads back as stored
    (``hitl.request.STORED``): a decision accepted under earlier limits still replays."""

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        return _adapter(Any if type_hint is None else type_hint).validate_json(
            payload.data, context=STORED)


@lru_cache(maxsize=1024)
def _cached_adapter(type_hint: Any) -> TypeAdapter[Any]:
    return TypeAdapter(type_hint)


def _adapter(type_hint: Any) -> TypeAdapter[Any]:
    try:
        return _cached_adapter(type_hint)
    except TypeError:  # an unhashable hint: not cached
        return TypeAdapter(type_hint)


class RefusingPayloadConverter(CompositePayloadConverter):
    """The pydantic converter (reading as stored), plus the refusal marker's
    (``RefusedPayloadConverter``)."""

    def __init__(self) -> None:
        super().__init__(*(StoredJSONConverter() if isinstance(c, PydanticJSONPlainPayloadConverter)
                           else c for c in PydanticPayloadConverter().converters.values()),
                         RefusedPayloadConverter())


def codec_from_settings(settings: Settings) -> EncryptionCodec | None:
    """The codec ``settings`` configure, or None when ``HITL_CODEC_KEYS`` is unset.

    ``HITL_CODEC_KEY_ID`` may be left out when there is a single key. Raises
    ``CodecKeyError`` naming the setting; validated here rather than in ``Settings``
    because pydantic echoes a failing field's raw input, which would print the keys.
    """
    if settings.codec_keys is None:
        for value, setting in ((settings.codec_key_id, KEY_ID_SETTING),
                               (settings.codec_accept_clear_until, ACCEPT_CLEAR_SETTING)):
            if value is not None:
                raise CodecKeyError(f"{setting} is set but {KEYS_SETTING} is not",
                                    field="codec_keys")
        return None
    keys = parse_keys(settings.codec_keys.get_secret_value())
    current = settings.codec_key_id
    if current is None:
        if len(keys) > 1:
            raise CodecKeyError(f"{KEY_ID_SETTING}: required when {KEYS_SETTING} holds "
                                f"several keys ({', '.join(keys)})", field="codec_key_id")
        current = next(iter(keys))
    return EncryptionCodec(keys, current_key_id=current,
                           accept_clear_until=settings.codec_accept_clear_until)
