"""A scripted inference endpoint on 127.0.0.1 that tests drive.

A test says what each route answers (status, JSON or raw body, headers, a
delay), either as a fixed sequence of replies or as a function of the request
body, and reads back every request the server received.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Reply:
    """One scripted answer."""

    json: Any = None
    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Request:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


Responder = Callable[[Any], Reply]


class ScriptedServer:
    """Answers each path from its script; unknown paths get the router's 404."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._replies: dict[str, deque[Reply]] = defaultdict(deque)
        self._responders: dict[str, Responder] = {}
        self._files: dict[str, tuple[bytes, str]] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, path: str, *replies: Reply) -> None:
        """Answer ``path`` with these replies in turn; the last one repeats."""
        with self._lock:
            self._replies[path] = deque(replies)

    def respond(self, path: str, responder: Responder) -> None:
        """Answer ``path`` by calling ``responder`` with the decoded body."""
        with self._lock:
            self._responders[path] = responder

    def serve_file(self, path: str, data: bytes, content_type: str) -> str:
        """Answer GET ``path`` with ``data``; return its URL."""
        with self._lock:
            self._files[path] = (data, content_type)
        return self.url + path

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._replies.clear()
            self._responders.clear()
            self._files.clear()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_reply(self, path: str, body: bytes) -> Reply:
        with self._lock:
            responder = self._responders.get(path)
            replies = self._replies.get(path)
            if responder is None and replies:
                return replies.popleft() if len(replies) > 1 else replies[0]
        if responder is not None:
            try:
                payload = json.loads(body) if body else None
            except ValueError:
                return Reply({"error": "body is not JSON"}, status=400)
            return responder(payload)
        model = path.removeprefix("/models/")
        return Reply({"error": f"Model {model} does not exist"}, status=404)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with server._lock:
                    server.requests.append(
                        Request("POST", self.path, dict(self.headers.items()), body)
                    )
                reply = server._next_reply(self.path, body)
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body
                if payload is None:
                    payload = json.dumps(reply.json).encode()
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with server._lock:
                    server.requests.append(
                        Request("GET", self.path, dict(self.headers.items()), b"")
                    )
                    found = server._files.get(self.path)
                if found is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data, content_type = found
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture(scope="session")
def _scripted_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


@pytest.fixture
def endpoint(_scripted_server: ScriptedServer) -> Iterator[ScriptedServer]:
    """The scripted endpoint, emptied before each test."""
    _scripted_server.reset()
    yield _scripted_server
    _scripted_server.reset()


def rate_limited(retry_after: str) -> Reply:
    """The hosted API's 429, with its Retry-After header."""
    return Reply(
        {"error": "Rate limit reached"},
        status=429,
        headers={"Retry-After": retry_after},
    )


# Answers shaped like the hosted API's, computed from the input so that a
# wrong input shows up as a wrong value.

SPAM_WORDS = ("subscribe", "win", "free", "asap", "click")


def spam_classifier(body: Any) -> Reply:
    """A text-classification endpoint with classes LABEL_0 (ham), LABEL_1 (spam).

    Answers in the hosted API's nested shape, ``[[{label, score}, ...]]``.
    """
    text = str(body["inputs"]).lower()
    hits = sum(word in text for word in SPAM_WORDS)
    spam = min(0.99, 0.1 + 0.3 * hits)
    return Reply(
        [
            sorted(
                [
                    {"label": "LABEL_1", "score": round(spam, 4)},
                    {"label": "LABEL_0", "score": round(1 - spam, 4)},
                ],
                key=lambda item: -item["score"],
            )
        ]
    )
