"""Running the app under uvicorn: alone (``hitl serve``) or embedded (``hitl up``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

from hitl.api.app import create_app
from hitl.api.codec import parse_origins
from hitl.client import HitlClient
from hitl.errors import InputError
from hitl.outbound import OutboundPolicy
from hitl.settings import Settings
from hitl.store import init_store, make_engine


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to its host: ``hitl up`` stops the API,
    the worker and the dev server together, in its own order, and ``hitl serve``
    exits 0 after draining instead of re-raising the signal as uvicorn does."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; binding here (not in uvicorn, which calls ``sys.exit`` on
    failure) turns a busy port into an ordinary error and lets tests use port 0.

    TCP_NODELAY is set here because asyncio does not set it on connections accepted
    from a socket it did not create (``create_server`` leaves the protocol number 0,
    which asyncio's check skips). Without it, each request after the first on a
    kept-alive connection waited about 40 ms: uvicorn writes the response head and
    body separately, and Nagle's algorithm held the body for the client's delayed
    ACK (measured: 44 ms against 1.5 ms per ``GET /healthz``; docs/BENCHMARKS.md).
    Accepted connections inherit the option from the listening socket.
    """
    try:
        sock = socket.create_server((host, port))
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}",
                         field="port") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _config(app: ASGIApp) -> uvicorn.Config:
    # log_config=None: uvicorn's loggers propagate to hitl's JSON logging.
    return uvicorn.Config(app, log_config=None, lifespan="off", proxy_headers=True)


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` in the running event loop; yields its URL, stops on exit."""
    sock = bind(host, port)
    server = EmbeddedServer(_config(app))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the API server stopped during startup")
            await asyncio.sleep(0.01)
        yield url_of(sock)
    finally:
        server.should_exit = True
        await task
        sock.close()


async def run_server(settings: Settings, *, host: str, port: int,
                     on_ready: Callable[[str], None] = lambda url: None) -> None:
    """``hitl serve``: the API alone, against ``settings``; Ctrl-C/SIGTERM stop it.
    ``on_ready`` gets the URL once Temporal answered and the socket listens."""
    outbound = OutboundPolicy.from_setting(settings.outbound_allow_hosts)  # bad: refused now
    sock = bind(host, port)
    hitl = await HitlClient.connect(settings)
    engine = make_engine(settings.resolved_database_url())
    init_store(engine)
    app = create_app(hitl=hitl, engine=engine,
                     codec_cors_origins=parse_origins(settings.codec_cors_origins),
                     outbound=outbound)
    server = EmbeddedServer(_config(app))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # drain requests, then exit 0
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    on_ready(url_of(sock))
    await server.serve(sockets=[sock])
