"""Real HTTP servers on loopback standing in for the judge and the action target."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[dict[str, Any]], tuple[int, bytes]]


class _CountingServer(ThreadingHTTPServer):
    """Counts the connections it accepts (``get_request`` runs on the serving thread)."""

    daemon_threads = True
    accepted = 0

    def get_request(self) -> tuple[socket.socket, Any]:
        pair = super().get_request()
        self.accepted += 1
        return pair

    def drain_backlog(self) -> None:
        """Accept (and count, and close) connections the kernel completed but the serving
        loop had not picked up yet: a connection counts from its handshake, not its
        request. Call once the serving loop has stopped."""
        self.socket.setblocking(False)
        while True:
            try:
                connection, _ = self.socket.accept()
            except BlockingIOError:
                return
            connection.close()
            self.accepted += 1


class LocalServer:
    """A threaded HTTP server answering POSTs with ``responder(body)``.

    ``host`` is a loopback address (127.0.0.2 stands for a host outside an allowlist
    of 127.0.0.1). ``connections`` counts every connection accepted, including those
    still in the listen backlog when the server stops: read it after the ``with``.
    """

    def __init__(self, responder: Responder, host: str = "127.0.0.1") -> None:
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.response_headers: dict[str, str] = {}  # sent with every answer (a Location)
        self._lock = threading.Lock()
        self.current = threading.local()  # the headers of the request this thread serves
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                if len(raw) < length:
                    # The client died mid-request (a SIGKILLed worker): like any real
                    # server, never hand a truncated request to the application.
                    self.close_connection = True
                    return
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.current.headers = headers
                with outer._lock:
                    outer.requests.append(body)
                    outer.headers.append(headers)
                status, payload = outer.responder(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in outer.response_headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = _CountingServer((host, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def connections(self) -> int:
        return self.server.accepted

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.drain_backlog()
        self.server.server_close()


def chat_completion(content: str) -> bytes:
    message = {"role": "assistant", "content": content}
    return json.dumps({"choices": [{"message": message}]}).encode()


class Judge:
    """Scriptable judge behaviour: set ``mode`` between tests."""

    def __init__(self) -> None:
        self.mode = "pass"
        self.delay = 0.0

    def __call__(self, body: dict[str, Any]) -> tuple[int, bytes]:
        if self.delay:
            time.sleep(self.delay)
        verdicts = {
            "pass": json.dumps({"pass": True, "score": 0.93, "reasons": ["consistent"]}),
            "fail": json.dumps({"pass": False, "score": 0.2, "reasons": ["hallucinated amount"]}),
            "extra_field": json.dumps({"pass": True, "score": 0.9, "reasons": [], "note": "x"}),
            "missing_field": json.dumps({"pass": True, "reasons": []}),
            "prose": "Sure! PASS. The output looks fine.",
            "string_pass": json.dumps({"pass": "true", "score": 0.9, "reasons": []}),
            # json.loads keeps the last of a repeated key: this read as a pass.
            "duplicate_pass": '{"pass": false, "score": 0.9, "reasons": [], "pass": true}',
            "passed_alias": json.dumps({"passed": True, "score": 0.9, "reasons": []}),
        }
        if self.mode == "500":
            return 500, b'{"error": "overloaded"}'
        if self.mode == "401":
            return 401, b'{"error": "bad key"}'
        if self.mode == "garbage":
            return 200, b"<html>not json</html>"
        if self.mode == "oversized":
            return 200, chat_completion("x" * 200_000)
        if self.mode == "duplicate_envelope":
            failed, passed = (chat_completion(json.dumps(
                {"pass": verdict, "score": 0.9, "reasons": []})).decode()[1:-1]
                for verdict in (False, True))
            return 200, f"{{{failed}, {passed}}}".encode()
        return 200, chat_completion(verdicts[self.mode])


class Target:
    """The action target: counts requests per Idempotency-Key, honours the key."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.status = 200
        self._lock = threading.Lock()
        self.server: LocalServer | None = None

    def __call__(self, body: dict[str, Any]) -> tuple[int, bytes]:
        assert self.server is not None
        key = self.server.current.headers.get("idempotency-key", "")
        with self._lock:
            self.counts[key] += 1
        return self.status, b'{"ok": true}'
