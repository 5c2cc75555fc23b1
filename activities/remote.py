"""A POST to a remote peer (action target, judge, regeneration endpoint), and what of
its failure may reach the decision's state.

Decision state is readable by anyone who can read the API, and the action target and
regeneration URL are the submitter's choice. A failure text that repeated the remote's
HTTP status or transport error would let a submitter probe the network behind the
worker, one decision at a time. So the failure names a class: refused by the outbound
policy (with the policy's reason, which names only the URL's host), refused by the
peer, or unavailable; the status and the error go to the worker's structured log.
Temporal's retry rules are unchanged: 3xx and 4xx (but the transient ones) fail for
good, 5xx and transport errors are retried.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from hitl.errors import OUTBOUND_REFUSED_TYPE, OutboundRefused
from hitl.outbound import OutboundClient


@dataclass(frozen=True)
class Peer:
    """One kind of remote, and the words its failures reach decision state in."""

    name: str  # "action target": the log's subject, and "<name> unavailable"
    refused: str  # the non-retryable failure for a 3xx or a final 4xx
    refused_type: str  # its ApplicationError type
    transient: frozenset[int]  # 4xx answers a retry may fix

    @property
    def unavailable(self) -> str:
        return f"{self.name} unavailable"


@asynccontextmanager
async def post(outbound: OutboundClient, peer: Peer, url: str, *, json: Any,
               headers: Mapping[str, str], http_timeout: float,
               log: Mapping[str, object]) -> AsyncIterator[httpx.Response]:
    """The peer's 2xx response, streamed; every other outcome as an activity failure.

    ``log`` is added to the worker log lines (the decision ID); never put the URL there,
    which may carry a token: the host is logged instead.
    """
    try:
        async with outbound.stream("POST", url, json=json, headers=headers,
                                   http_timeout=http_timeout) as response:
            status = response.status_code
            if status >= 300:
                extra = {**log, "host": response.request.headers.get("host"), "status": status}
                if status < 500 and status not in peer.transient:
                    activity.logger.warning(f"{peer.name} refused the request", extra=extra)
                    raise ApplicationError(peer.refused, type=peer.refused_type,
                                           non_retryable=True)
                activity.logger.warning(peer.unavailable, extra=extra)
                raise RuntimeError(peer.unavailable)
            yield response
    except OutboundRefused as exc:
        activity.logger.warning("outbound request refused", extra={
            **log, "peer": peer.name, "host": exc.host, "reason": exc.reason})
        # Reads "OutboundRefused: host 127.0.0.2 is not in HITL_OUTBOUND_ALLOW_HOSTS".
        raise ApplicationError(exc.reason, type=OUTBOUND_REFUSED_TYPE,
                               non_retryable=True) from None
    except httpx.TransportError as exc:
        activity.logger.warning(peer.unavailable, extra={
            **log, "error": type(exc).__name__, "detail": str(exc)[:300]})
        raise RuntimeError(peer.unavailable) from None
