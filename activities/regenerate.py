"""Reject and regenerate: a rejected output's feedback goes back to the service.

The service registered the endpoint on the request (``regenerate.url``); it
gets the rejected output with the reviewer's reason, error category and
correct answer, and answers with a new output that the workflow screens again
from the top. The call fails closed like the judge: a 4xx is a non-retryable
``RegenerateRejected``, a body that is not a valid result (or is over the size
cap) a non-retryable ``RegenerateInvalid``; 5xx and transport errors are
retried by Temporal. Every retry of one regeneration carries the same
``Idempotency-Key`` (``<decision>:regen:<n>``), so a service that honours it
generates once however often the activity runs.
"""

from __future__ import annotations

import httpx
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from hitl.limits import MAX_BODY_BYTES
from hitl.payloads import RegenerateInput, RegenerateResult

REGENERATE_REJECTED_TYPE = "RegenerateRejected"
REGENERATE_INVALID_TYPE = "RegenerateInvalid"
TIMEOUT_SECONDS = 20.0
MAX_RESPONSE_BYTES = MAX_BODY_BYTES  # any valid result (hitl.limits), however it is escaped


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type=REGENERATE_INVALID_TYPE, non_retryable=True)


def parse_result(body: bytes) -> RegenerateResult:
    """The endpoint's answer as a ``RegenerateResult``, or ``RegenerateInvalid``
    naming the fields that were wrong (never their values: they are model output)."""
    try:
        return RegenerateResult.model_validate_json(body)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "(root)" for e in exc.errors()})
        raise _invalid(f"regeneration response is not a valid result: {fields}") from None


class RegenerateActivities:
    """Holds the worker's shared HTTP client (no retries of its own) and the limits."""

    def __init__(self, *, client: httpx.AsyncClient, timeout_seconds: float = TIMEOUT_SECONDS,
                 max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self._client = client
        self._timeout = timeout_seconds
        self._limit = max_response_bytes

    @activity.defn(name="regenerate_output")
    async def regenerate_output(self, data: RegenerateInput) -> RegenerateResult:
        payload = data.model_dump(mode="json", exclude={"url"})
        headers = {"Content-Type": "application/json", "Idempotency-Key": data.idempotency_key}
        async with self._client.stream("POST", data.url, json=payload, headers=headers,
                                       timeout=self._timeout) as response:
            # Redirects are not followed (a misconfigured URL); a 4xx other than a
            # timeout or rate limit will not improve by retrying.
            if 300 <= response.status_code < 500 and response.status_code not in (408, 429):
                raise ApplicationError(
                    f"regeneration endpoint refused the request: HTTP {response.status_code}",
                    type=REGENERATE_REJECTED_TYPE, non_retryable=True)
            if response.status_code >= 300:
                raise RuntimeError(
                    f"regeneration endpoint answered HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > self._limit:
                    raise _invalid(f"regeneration response exceeds {self._limit} bytes")
        return parse_result(bytes(body))
