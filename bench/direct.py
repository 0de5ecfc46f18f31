"""The direct Python clients the benchmark compares hf_fdw with.

Each client sends the requests hf_fdw sends for a list of texts: one
``POST {"inputs": text}`` per text to a text-classification URL, and reads the
top label of each answer.

- ``requests``: one ``requests.Session``, one request after another;
- ``pool``: a thread pool of ``concurrency`` threads, one session per thread
  (how hf_fdw sends them);
- ``hub``: huggingface_hub's ``InferenceClient`` pointed at the URL, one
  ``text_classification`` call after another.

It runs as a worker process of ``bench/run.py``, which starts it with the
Python that PostgreSQL embeds (the same ``requests`` and ``urllib3`` as the
backend) for the first two, and with its own Python for the hub client. It
reads one JSON command per line on stdin and answers one JSON line on stdout:
``{"client": ..., "url": ..., "texts": [...], "concurrency": 4}`` gives
``{"seconds": wall time, "cpu": this process's CPU time, "labels": {...}}``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

# huggingface_hub's offline mode (HF_HUB_OFFLINE=1) refuses every request, a
# local URL's too, so it cannot keep the hub client at home; this guard does:
# every client here may connect to the loopback address only.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
_connect = socket.socket.connect


def _loopback_only(sock: socket.socket, address: Any) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
        "127.0.0.1",
        "::1",
    ):
        raise ConnectionRefusedError(f"bench: no connection to {address[0]}")
    _connect(sock, address)


socket.socket.connect = _loopback_only  # type: ignore[method-assign, assignment]

HEADERS = {"Content-Type": "application/json"}


def top_label(answer: Any) -> str:
    """The label with the highest score, from the nested or the flat shape."""
    items = answer[0] if answer and isinstance(answer[0], list) else answer
    return max(items, key=lambda item: item["score"])["label"]


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


def _post(session: requests.Session, url: str, text: str) -> str:
    response = session.post(url, data=json.dumps({"inputs": text}), headers=HEADERS,
                            timeout=30)
    response.raise_for_status()
    return top_label(response.json())


def run_requests(url: str, texts: list[str], concurrency: int) -> list[str]:
    session = _session()
    return [_post(session, url, text) for text in texts]


def run_pool(url: str, texts: list[str], concurrency: int) -> list[str]:
    local = threading.local()

    def one(text: str) -> str:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = _session()
        return _post(session, url, text)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, texts))


_hub_clients: dict[str, Any] = {}


def run_hub(url: str, texts: list[str], concurrency: int) -> list[str]:
    from huggingface_hub import InferenceClient

    client = _hub_clients.get(url)
    if client is None:
        # A placeholder token: without one the client would look for the
        # user's own, which has no business going to a benchmark server.
        client = _hub_clients[url] = InferenceClient(
            model=url, token="bench-placeholder", timeout=30
        )
    labels = []
    for text in texts:
        items = client.text_classification(text)
        labels.append(max(items, key=lambda item: item.score).label)
    return labels


CLIENTS: dict[str, Callable[[str, list[str], int], list[str]]] = {
    "requests": run_requests,
    "pool": run_pool,
    "hub": run_hub,
}


def main() -> None:
    for line in sys.stdin:
        command = json.loads(line)
        client = CLIENTS[command["client"]]
        started_cpu = time.process_time()
        started = time.perf_counter()
        try:
            labels = client(command["url"], command["texts"], command["concurrency"])
        except Exception as exc:  # noqa: BLE001 (run.py reports it)
            answer: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            answer = {
                "seconds": time.perf_counter() - started,
                "cpu": time.process_time() - started_cpu,
                "labels": dict(Counter(labels)),
            }
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
