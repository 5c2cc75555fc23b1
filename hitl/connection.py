"""The one way to reach Temporal: same data converter for worker, CLI, API and tests."""

from __future__ import annotations

import dataclasses

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes

from hitl.codec import RefusingPayloadConverter, codec_from_settings
from hitl.errors import TemporalUnavailable
from hitl.settings import Settings
from hitl.telemetry import worker_runtime


def data_converter(settings: Settings | None = None) -> DataConverter:
    """Pydantic models as payloads, AES-GCM encrypted when ``settings`` configure
    ``HITL_CODEC_KEYS`` (``hitl.codec``); with no settings, in clear.

    With encryption on, failure messages and stack traces are moved into an encoded
    payload too (``encode_common_attributes``): they can quote decision content (a
    validation error echoes its input, a refusal names the reviewer), and the server
    then shows "Encoded failure" while every client with the keys reads the message.
    Failure types stay in clear, so callers still map errors by type. A payload that
    arrives in clear is refused (``hitl.codec``): the codec marks it and
    ``RefusingPayloadConverter`` turns the mark into ``PayloadRefused``.
    """
    codec = codec_from_settings(settings) if settings is not None else None
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter, payload_codec=codec,
        payload_converter_class=RefusingPayloadConverter,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes)


async def connect(settings: Settings, *, for_worker: bool = False) -> Client:
    """A client for ``settings``; ``TemporalUnavailable`` if nothing answers.

    Only a worker process (``for_worker``) gets the worker runtime, which exports
    metrics and forwards the SDK core's logs: a CLI call with the same environment
    must not try to bind the worker's metrics port.
    """
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.namespace,
            data_converter=data_converter(settings),
            runtime=worker_runtime(settings.metrics_address) if for_worker else None,
            api_key=(settings.temporal_api_key.get_secret_value()
                     if settings.temporal_api_key else None),
            tls=settings.temporal_tls or settings.temporal_api_key is not None,
        )
    except RuntimeError as exc:
        raise TemporalUnavailable(
            f"cannot reach Temporal at {settings.temporal_address} "
            "(is `hitl up` running, or HITL_TEMPORAL_ADDRESS set?)") from exc
