"""Search attributes that make every decision filterable in the Temporal UI.

Saved views such as ``HitlStatus = "pending_review" AND HitlRisk = "critical"``
rely on the workflow keeping these current through every transition.
"""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

TASK_TYPE = SearchAttributeKey.for_keyword("HitlTaskType")
RISK = SearchAttributeKey.for_keyword("HitlRisk")
ZONE = SearchAttributeKey.for_keyword("HitlZone")
STATUS = SearchAttributeKey.for_keyword("HitlStatus")
CONFIDENCE = SearchAttributeKey.for_float("HitlConfidence")
SLA_DEADLINE = SearchAttributeKey.for_datetime("HitlSlaDeadline")
PRIORITY = SearchAttributeKey.for_int("HitlPriority")

ALL = (TASK_TYPE, RISK, ZONE, STATUS, CONFIDENCE, SLA_DEADLINE, PRIORITY)

# How the temporal CLI spells the types for `--search-attribute NAME=TYPE`.
CLI_TYPES = {
    TASK_TYPE: "Keyword", RISK: "Keyword", ZONE: "Keyword", STATUS: "Keyword",
    CONFIDENCE: "Double", SLA_DEADLINE: "Datetime", PRIORITY: "Int",
}


def cli_flags() -> list[str]:
    """``--search-attribute`` flags for ``temporal server start-dev``."""
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={CLI_TYPES[key]}"]
    return flags


async def register(client: Client) -> list[str]:
    """Register any of hitl's search attributes the namespace lacks; returns those added.

    For servers not started by ``hitl up`` (the time-skipping test server, a
    self-hosted cluster); the dev server gets them from ``cli_flags``.
    """
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace))
        known = set(existing.custom_attributes) | set(existing.system_attributes)
    except RPCError as exc:
        if exc.status != RPCStatusCode.UNIMPLEMENTED:  # the test server cannot list them
            raise
        known = set()
    # The SDK's SearchAttributeIndexedValueType mirrors the API enum's numbers.
    missing = {key.name: IndexedValueType.ValueType(int(key.indexed_value_type))
               for key in ALL if key.name not in known}
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing))
        except RPCError as exc:
            if exc.status != RPCStatusCode.ALREADY_EXISTS:
                raise
    return sorted(missing)
