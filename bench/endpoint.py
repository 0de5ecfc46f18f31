"""A text-classification endpoint on 127.0.0.1 with a set latency, for the benchmark.

``POST /models/<any model id>/delay-<ms>`` sleeps ``<ms>`` milliseconds, then
answers like the hosted API's text classification, ``[[{label, score}, ...]]``,
with a label computed from the input. ``GET /stats`` gives the number of
prediction requests served so far, across every worker process.

The server must never be what the benchmark measures, so it is kept light:
several worker processes (each a ``ThreadingHTTPServer``, a thread per
connection) accept on one listening socket, connections are kept alive
(HTTP/1.1), Nagle's algorithm is off, and each answer is written in one call.

Run it as ``python3 bench/endpoint.py [--workers N]``: it prints
``listening on http://127.0.0.1:PORT`` and serves until it is terminated.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SPAM_WORDS = ("subscribe", "win", "free", "asap", "click")


def classify(text: str) -> bytes:
    """The answer body for one input: LABEL_1 (spam) or LABEL_0 (ham) first."""
    hits = sum(word in text.lower() for word in SPAM_WORDS)
    spam = min(0.99, 0.1 + 0.3 * hits)
    labels: list[dict[str, Any]] = [
        {"label": "LABEL_1", "score": round(spam, 4)},
        {"label": "LABEL_0", "score": round(1 - spam, 4)},
    ]
    labels.sort(key=lambda item: -item["score"])
    return json.dumps([labels]).encode()


def handler_class(counter: Any) -> type[BaseHTTPRequestHandler]:
    """A request handler that counts prediction requests in ``counter``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:  # http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            model, _, delay = self.path.rpartition("/delay-")
            if not model.startswith("/models/") or not delay.isdigit():
                self._answer(404, b'{"error": "unknown route"}')
                return
            with counter.get_lock():
                counter.value += 1
            if delay != "0":
                time.sleep(int(delay) / 1000)
            try:
                text = str(json.loads(body)["inputs"])
            except (ValueError, KeyError, TypeError):
                self._answer(400, b'{"error": "body must be {\\"inputs\\": text}"}')
                return
            self._answer(200, classify(text))

        def do_GET(self) -> None:
            if self.path != "/stats":
                self._answer(404, b'{"error": "unknown route"}')
                return
            self._answer(200, json.dumps({"requests": counter.value}).encode())

        def _answer(self, status: int, payload: bytes) -> None:
            head = (
                f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n"
            ).encode()
            self.wfile.write(head + payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def _serve(listener: socket.socket, counter: Any) -> None:
    """One worker: serve connections accepted on the shared socket."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server = _Server(("127.0.0.1", 0), handler_class(counter), bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.server_address = listener.getsockname()
    server.serve_forever(poll_interval=0.5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(256)

    context = multiprocessing.get_context("fork")
    counter = context.Value("q", 0)
    workers = [
        context.Process(target=_serve, args=(listener, counter), daemon=True)
        for _ in range(max(1, args.workers))
    ]
    for worker in workers:
        worker.start()

    def stop(*_: Any) -> None:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join(timeout=5)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = listener.getsockname()
    print(f"listening on http://{host}:{port}", flush=True)
    print("workers " + " ".join(str(w.pid) for w in workers), flush=True)
    while all(worker.is_alive() for worker in workers):
        time.sleep(0.5)
    stop()


if __name__ == "__main__":
    main()
