"""What the routes depend on, built once per app and held on ``app.state``."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from fastapi import Depends, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy.engine import Engine

from hitl.api.queue import QueueSource
from hitl.client import HitlClient
from hitl.outbound import DEFAULT_POLICY, OutboundPolicy
from hitl.request import DecisionRequest

if TYPE_CHECKING:
    from hitl.api.auth import SessionStore

REQUEST_CACHE_SIZE = 2048


@dataclass
class Services:
    hitl: HitlClient
    engine: Engine
    queue: QueueSource
    sessions: SessionStore
    # The worker's outbound policy (same HITL_OUTBOUND_ALLOW_HOSTS), to refuse at submit.
    outbound: OutboundPolicy = DEFAULT_POLICY
    # Requests never change once submitted: cache them for a reviewer paging back and forth.
    requests: dict[str, DecisionRequest] = field(default_factory=dict)

    def remember(self, request: DecisionRequest) -> None:
        if len(self.requests) >= REQUEST_CACHE_SIZE:
            self.requests.pop(next(iter(self.requests)))
        self.requests[request.decision_id] = request

    def check_outbound(self, request: DecisionRequest) -> None:
        """A 422 naming the field for a URL the outbound policy refuses without resolving
        its host (an address no service lives at, a host outside the allowlist). The
        worker checks again, after resolving, and its check is the one that counts."""
        self.check_urls({("action", "target_url"): request.action.target_url,
                         ("regenerate", "url"): request.regenerate.url if request.regenerate
                         else None})

    def check_urls(self, urls: dict[tuple[str, ...], str | None]) -> None:
        """``check_outbound`` for the URLs of any body (an edited action's target)."""
        errors = [{"type": "value_error", "loc": ("body", *loc), "msg": refusal, "input": url}
                  for loc, url in urls.items()
                  if url is not None and (refusal := self.outbound.refusal(url)) is not None]
        if errors:
            raise RequestValidationError(errors)


def get_services(request: Request) -> Services:
    return cast(Services, request.app.state.services)


def strict_body(model: type[BaseModel]) -> Any:
    """A route dependency that refuses a JSON body unless its types are the schema's.

    FastAPI validates bodies in pydantic's lax mode, which reads ``0`` and ``"no"``
    as ``false`` and ``"0.9"`` as a number: input the OpenAPI schema calls invalid
    would be accepted. This validates the same bytes as JSON in strict mode first, so
    such a body is a 422 naming the field (``body.context.is_new_user``).
    """

    async def check(request: Request) -> None:
        body = await request.body()
        if not body:  # FastAPI's own "Field required" says it better
            return
        try:
            model.model_validate_json(body, strict=True)
        except ValidationError as exc:
            errors = [{**error, "loc": ("body", *error["loc"])}
                      for error in exc.errors(include_url=False) if not _whole(error)]
            if errors:
                raise RequestValidationError(errors) from exc

    checker: Callable[[Request], Awaitable[None]] = check
    return Depends(checker)


def _whole(error: ErrorDetails) -> bool:
    """``1.0`` where an integer is due: JSON Schema calls it an integer, strict pydantic
    does not. Left to FastAPI's lax validation, which reads it as ``1``."""
    value = error["input"]
    return error["type"] == "int_type" and isinstance(value, float) and value.is_integer()


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, with every number in it JSON can hold: an error echoes its input,
    and a ``NaN`` in the body (which Python's JSON parser reads) made the answer a 500."""
    return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf"
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
