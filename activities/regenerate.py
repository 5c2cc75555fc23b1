"""Reject and regenerate: a rejected output's feedback goes back to the service.

The service registered the endpoint on the request (``regenerate.url``); it
gets the rejected output with the reviewer's reason, error category and
correct answer, and answers with a new output that the workflow screens again
from the top. The call fails closed like the judge: a 4xx is a non-retryable
``RegenerateRejected``, a body that is not a valid result (or is over the size
cap) a non-retryable ``RegenerateInvalid``; 5xx and transport errors are
retried by Temporal; a URL the outbound policy refuses (``hitl.outbound``) is a
non-retryable ``OutboundRefused``, with nothing sent. The failure becomes the
decision's outcome, which anyone reading the API sees, and the URL is the
submitter's: it says what kind of failure it was, never what the endpoint answered
(status, fields, size); those go to the worker log. Every retry of one regeneration carries the same
``Idempotency-Key`` (``<decision>:regen:<n>``), so a service that honours it
generates once however often the activity runs.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.remote import Peer, post
from hitl.limits import MAX_BODY_BYTES
from hitl.outbound import DEFAULT_POLICY, OutboundClient, OutboundPolicy, Resolver, system_resolver
from hitl.payloads import RegenerateInput, RegenerateResult

REGENERATE_REJECTED_TYPE = "RegenerateRejected"
REGENERATE_INVALID_TYPE = "RegenerateInvalid"
TIMEOUT_SECONDS = 20.0
MAX_RESPONSE_BYTES = MAX_BODY_BYTES  # any valid result (hitl.limits), however it is escaped
INVALID = "regeneration endpoint answered with an invalid result"

# Redirects are not followed (a misconfigured URL, or one pointing the worker
# elsewhere); a 4xx other than a timeout or rate limit will not improve by retrying.
ENDPOINT = Peer(name="regeneration endpoint", refused="regeneration endpoint refused the request",
                refused_type=REGENERATE_REJECTED_TYPE, transient=frozenset({408, 429}))


def _invalid(log: Mapping[str, object], error: str) -> ApplicationError:
    activity.logger.warning(INVALID, extra={**log, "error": error})
    return ApplicationError(INVALID, type=REGENERATE_INVALID_TYPE, non_retryable=True)


class RegenerateActivities:
    """Holds the worker's shared HTTP client (no retries of its own), the limits, and
    the outbound policy that bounds where regeneration requests may go."""

    def __init__(self, *, client: httpx.AsyncClient, timeout_seconds: float = TIMEOUT_SECONDS,
                 max_response_bytes: int = MAX_RESPONSE_BYTES,
                 outbound: OutboundPolicy = DEFAULT_POLICY,
                 resolver: Resolver = system_resolver) -> None:
        self._outbound = OutboundClient(client=client, policy=outbound, resolver=resolver)
        self._timeout = timeout_seconds
        self._limit = max_response_bytes

    @activity.defn(name="regenerate_output")
    async def regenerate_output(self, data: RegenerateInput) -> RegenerateResult:
        payload = data.model_dump(mode="json", exclude={"url"})
        headers = {"Content-Type": "application/json", "Idempotency-Key": data.idempotency_key}
        log = {"decision_id": data.decision_id, "attempt": data.attempt}
        async with post(self._outbound, ENDPOINT, data.url, json=payload, headers=headers,
                        http_timeout=self._timeout, log=log) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > self._limit:
                    raise _invalid(log, f"over {self._limit} bytes")
        try:
            return RegenerateResult.model_validate_json(bytes(body))
        except ValidationError as exc:
            # The fields that were wrong, never their values: they are model output.
            fields = sorted({".".join(str(p) for p in e["loc"]) or "(root)"
                             for e in exc.errors()})
            raise _invalid(log, f"bad fields {fields}") from None
