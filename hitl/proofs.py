"""Verdict proofs: a reviewer's signature over exactly what they decided.

A reviewer holds one secret, their token (``hitl reviewers add|rotate``). From it
derive (HKDF-SHA256) an Ed25519 signing key; the registry stores only the token's
SHA-256 (to authenticate API calls) and the public key (to verify proofs), so a
copy of the store signs nothing. A proof signs the canonical JSON of

    {"v": PROOF_VERSION, "decision_id", "verdict", "key_id", "expires_at",
     "review": <the whole action but its proof: reviewer, content_sha256,
                request_id, reason, edits, correct answer, ...>}

so it binds the reviewer, the decision, the content digest, the verdict, the
request ID and an expiry, and nothing in the action can be changed without it
failing. ``hitl approve|reject`` and the HTTP API sign; the workflow verifies
through the ``authorize_review`` activity, whose answer is recorded in history.

The library is ``cryptography`` (Ed25519 and HKDF), already a dependency for
payload encryption.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hitl.enums import Verdict
from hitl.review import ReviewInput, VerdictProof

PROOF_VERSION = "hitl-verdict/v1"
_KEY_INFO = b"hitl verdict signing key v1"
DEFAULT_LIFETIME = timedelta(minutes=10)  # the API's and the CLI's proofs
MAX_LIFETIME = timedelta(hours=24)  # a proof valid longer than this is refused
CLOCK_SKEW = timedelta(minutes=2)

ReviewT = TypeVar("ReviewT", bound=ReviewInput)


def signing_key(token: str) -> Ed25519PrivateKey:
    """The Ed25519 key a token stands for (deterministic, never stored)."""
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_KEY_INFO).derive(token.encode("utf-8"))
    return Ed25519PrivateKey.from_private_bytes(seed)


def verify_key(token: str) -> str:
    """The public key (hex) the registry stores for ``token``."""
    public = signing_key(token).public_key()
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def key_id(verify_key_hex: str) -> str:
    """A short name for a public key, carried in proofs (which key signed)."""
    return hashlib.sha256(bytes.fromhex(verify_key_hex)).hexdigest()[:16]


def claim(review: ReviewInput, *, decision_id: str, verdict: Verdict,
          key: str, expires_at: datetime) -> bytes:
    """The bytes a proof signs."""
    body = {
        "v": PROOF_VERSION, "decision_id": decision_id, "verdict": verdict.value,
        "key_id": key, "expires_at": _instant(expires_at),
        "review": review.model_dump(mode="json", exclude={"proof"}),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def sign(review: ReviewT, *, decision_id: str, verdict: Verdict, token: str,
         now: datetime | None = None, lifetime: timedelta = DEFAULT_LIFETIME) -> ReviewT:
    """``review`` with a proof made from ``token``, valid for ``lifetime``."""
    return sign_with(signing_key(token), review, decision_id=decision_id, verdict=verdict,
                     now=now, lifetime=lifetime)


def sign_with(private: Ed25519PrivateKey, review: ReviewT, *, decision_id: str,
              verdict: Verdict, now: datetime | None = None,
              lifetime: timedelta = DEFAULT_LIFETIME) -> ReviewT:
    """``sign`` with the key already derived (the API keeps it for a session)."""
    kid = key_id(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex())
    expires = ((now or datetime.now(UTC)) + lifetime).replace(microsecond=0)
    signature = private.sign(claim(review, decision_id=decision_id, verdict=verdict, key=kid,
                                   expires_at=expires))
    proof = VerdictProof(key_id=kid, expires_at=expires,
                         signature=base64.urlsafe_b64encode(signature).rstrip(b"=").decode())
    return review.model_copy(update={"proof": proof})


def check(review: ReviewInput, *, decision_id: str, verdict: Verdict,
          verify_key_hex: str, now: datetime) -> str | None:
    """Why the proof on ``review`` does not prove it, or None when it does."""
    proof = review.proof
    if proof is None:
        return "no proof of who sent it: sign with the reviewer's token (hitl approve|reject)"
    if proof.key_id != key_id(verify_key_hex):
        return ("proof not signed with this reviewer's current key (another reviewer's "
                "token, or one since rotated)")
    expires = proof.expires_at if proof.expires_at.tzinfo else proof.expires_at.replace(
        tzinfo=UTC)
    if expires <= now - CLOCK_SKEW:
        return f"proof expired at {_instant(expires)}; sign again"
    if expires > now + MAX_LIFETIME + CLOCK_SKEW:
        return f"proof valid for longer than {MAX_LIFETIME}; sign with a shorter lifetime"
    try:
        signature = base64.urlsafe_b64decode(proof.signature + "==")
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(verify_key_hex))
        public.verify(signature, claim(review, decision_id=decision_id, verdict=verdict,
                                       key=proof.key_id, expires_at=expires))
    except (InvalidSignature, ValueError):
        return ("proof does not verify: it was not signed by this reviewer for this "
                "decision, verdict and content")
    return None


def _instant(value: datetime) -> str:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
