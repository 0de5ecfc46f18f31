"""HTTP calls to an inference endpoint: retries, timeouts, and errors that say the fix.

Nothing here knows about PostgreSQL or Multicorn. The API key is held by the
session's headers only: it is never put in a message, and any text that comes
back from a server is scrubbed of it before it reaches an error.
"""

from __future__ import annotations

import heapq
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import requests

from hf_fdw.errors import HfFdwError
from hf_fdw.options import ROUTER_URL, EngineSettings
from hf_fdw.tasks import RawBody

log = logging.getLogger("hf_fdw")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_WAIT = 10.0
MAX_BODY = 64 * 1024 * 1024


def _server_words(response: requests.Response, scrub: Callable[[str], str]) -> str:
    """The error text a server sent, in any of the shapes providers use.

    ``scrub`` runs before the text is cut short, so no part of a key survives.
    """
    try:
        payload = response.json()
    except ValueError:
        text = response.text.strip() or response.reason or ""
        return scrub(text)[:500] or f"HTTP {response.status_code}"
    if isinstance(payload, dict) and "error" in payload:
        error = payload["error"]
        if isinstance(error, list):
            error = "; ".join(str(part) for part in error)
        words = str(error)
        if payload.get("error_type"):
            words += f" ({payload['error_type']})"
        warnings = payload.get("warnings")
        if isinstance(warnings, list) and warnings:
            words += "; " + "; ".join(str(w) for w in warnings)
        return scrub(words)[:500]
    return scrub(json.dumps(payload))[:500]


def _hint(
    status: int, engine: EngineSettings, model_id: str | None, words: str = ""
) -> str | None:
    if "conversational" in words.lower():
        return (
            f"model {model_id!r} is served as a chat model only: register it "
            "with task => 'chat-completion'"
        )
    if status == 401:
        return (
            "the API key was refused: set a valid one with "
            f"SELECT hf_fdw.set_api_key('{engine.name}', '<token>')"
        )
    if status in (400, 403) and engine.is_hosted:
        return (
            "check the inputs and parameters; a token also needs the "
            "'Inference Providers' permission, and gated models need access"
        )
    if status == 402:
        return "the account's inference credits are used up"
    if status == 404:
        return (
            f"model {model_id!r} is not served at this endpoint; check "
            "model_name, or for a dedicated deployment use "
            "endpoint => '<your endpoint URL>'"
        )
    if status == 410:
        return f"this host is retired; use the router, {ROUTER_URL}"
    if status in (413, 422):
        return "the input is too long or not valid for this model"
    if status in RETRY_STATUSES:
        return (
            "the endpoint is busy or loading; try again later, or raise "
            "the engine's max_retries"
        )
    return None


# Hosts a Hugging Face token is meant for, wherever a model's endpoint points.
HF_HOST_SUFFIXES = (".huggingface.co", ".huggingface.cloud", ".hf.space")


@lru_cache(maxsize=256)
def key_goes_to(url: str, engine_endpoint: str) -> bool:
    """Whether the engine's key may be sent to ``url``.

    To the engine's own host, and to Hugging Face's hosts (a dedicated
    Inference Endpoint needs the token); never to any other host that a
    model's owner names, who may not be the key's owner.
    """
    host = (urlsplit(url).hostname or "").lower()
    engine_parts = urlsplit(engine_endpoint)
    if (
        host == (engine_parts.hostname or "").lower()
        and urlsplit(url).port == engine_parts.port
    ):
        return True
    return host == "huggingface.co" or host.endswith(HF_HOST_SUFFIXES)


class Stopped(Exception):
    """The statement that asked for this request was cancelled."""


class StopSignal:
    """A statement's stop request, shared by the requests it started.

    Setting it ends retries and backoff waits, and shuts down the sockets of
    answers still being read, so no worker thread outlives the statement by
    more than a moment.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)

    def set(self) -> None:
        self._event.set()
        with self._lock:
            for sock in self._sockets:
                _shut(sock)

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)
            if self._event.is_set():
                _shut(sock)

    def forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Watchdog:
    """One thread that shuts sockets down when their deadlines pass.

    A timer thread per request would cost more than the request on a fast
    endpoint; this one sleeps until the earliest deadline it holds.
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._deadlines: list[tuple[float, int, socket.socket]] = []
        self._count = 0
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, deadline: float) -> int:
        """Shut ``sock`` at ``deadline`` (time.monotonic) unless released."""
        with self._wake:
            self._count += 1
            heapq.heappush(self._deadlines, (deadline, self._count, sock))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="hf_fdw-watchdog", daemon=True
                )
                self._thread.start()
            self._wake.notify()
            return self._count

    def release(self, token: int) -> None:
        with self._wake:
            self._deadlines = [d for d in self._deadlines if d[1] != token]
            heapq.heapify(self._deadlines)

    def _run(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                while self._deadlines and self._deadlines[0][0] <= now:
                    _shut(heapq.heappop(self._deadlines)[2])
                timeout = self._deadlines[0][0] - now if self._deadlines else None
                self._wake.wait(timeout)


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The socket an answer is read from (urllib3 1.26 and 2.x alike)."""
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


class InferenceClient:
    """Posts bodies to one engine's endpoints, with bounded retries."""

    def __init__(
        self,
        engine: EngineSettings,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.engine = engine
        self._sleep = sleep
        self._local = threading.local()
        self._count_lock = threading.Lock()
        self._watchdog = Watchdog()
        self.requests_sent = 0
        self.retries = 0

    def _wait(self, seconds: float, stop: threading.Event | None) -> None:
        """Sleep before a retry; a stop request ends the wait at once."""
        with self._count_lock:
            self.retries += 1
        if self._sleep is not None:
            self._sleep(seconds)
        elif stop is not None:
            stop.wait(seconds)
        else:
            time.sleep(seconds)
        if stop is not None and stop.is_set():
            raise Stopped()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False
            session.headers["User-Agent"] = "hf_fdw/0.1"
            self._local.session = session
        return session

    def _headers(self, url: str, content_type: str) -> dict[str, str]:
        """The request's headers; the key only for hosts that may have it."""
        headers = {"Content-Type": content_type}
        if self.engine.api_key and key_goes_to(url, self.engine.endpoint):
            headers["Authorization"] = f"Bearer {self.engine.api_key}"
        return headers

    def scrub(self, text: str) -> str:
        """Remove the API key from any text bound for a message."""
        key = self.engine.api_key
        if key and key in text:
            text = text.replace(key, "<api key>")
        return text

    def post(
        self,
        url: str,
        body: Any,
        model_id: str | None = None,
        stop: StopSignal | threading.Event | None = None,
    ) -> Any:
        """POST ``body`` as JSON and return the decoded answer.

        ``stop``, when set by the caller (a cancelled statement), ends the
        retries: no new attempt starts and a backoff wait is cut short.
        Each answer is read within the engine's ``timeout`` in all and at
        most ``MAX_BODY`` bytes (once decompressed); redirects are refused.
        """
        host = urlsplit(url).netloc
        if isinstance(body, RawBody):
            data, content_type = body.data, body.mime
        else:
            data, content_type = json.dumps(body).encode(), "application/json"
        headers = self._headers(url, content_type)
        attempt = 0
        while True:
            attempt += 1
            if stop is not None and stop.is_set():
                raise Stopped()
            try:
                with self._count_lock:
                    self.requests_sent += 1
                started = time.monotonic()
                response = self._session().post(
                    url,
                    data=data,
                    headers=headers,
                    timeout=(min(10.0, self.engine.timeout), self.engine.timeout),
                    allow_redirects=False,
                    stream=True,
                )
                self._read_body(response, host, started, stop)
            except requests.Timeout:
                failure: str | None = (
                    f"no answer from {host} within {self.engine.timeout:g} s"
                )
                response = None
            except requests.ConnectionError as exc:
                failure = f"could not connect to {host}: {type(exc).__name__}"
                response = None
            except requests.RequestException as exc:
                # A body cut short, a redirect loop, a URL requests cannot use.
                failure = f"request to {host} failed: {type(exc).__name__}"
                response = None

            if response is None:
                if attempt <= self.engine.max_retries:
                    self._wait(self._backoff(attempt, None), stop)
                    continue
                raise HfFdwError(
                    f"inference request to {host} failed",
                    detail=failure,
                    hint="check that the endpoint is up and reachable from the "
                    "database server; the engine's timeout and max_retries "
                    "options bound the wait",
                )

            if response.status_code == 200:
                return self._decode(response, host)
            if 300 <= response.status_code < 400:
                raise HfFdwError(
                    f"inference endpoint {host} answered a redirect "
                    f"(HTTP {response.status_code})",
                    detail="to " + self.scrub(response.headers.get("Location", "?")),
                    hint="give the final URL as the endpoint; hf_fdw does not "
                    "follow redirects, which would drop the request's body",
                )

            words = _server_words(response, self.scrub)
            if (
                response.status_code in RETRY_STATUSES
                and attempt <= self.engine.max_retries
            ):
                delay = self._backoff(attempt, response)
                log.debug(
                    "HTTP %s from %s, retry in %.1f s",
                    response.status_code,
                    host,
                    delay,
                )
                self._wait(delay, stop)
                continue
            raise HfFdwError(
                f"inference endpoint {host} answered HTTP {response.status_code}",
                detail=words,
                hint=_hint(response.status_code, self.engine, model_id, words),
            )

    def _read_body(
        self,
        response: requests.Response,
        host: str,
        started: float,
        stop: StopSignal | threading.Event | None,
    ) -> None:
        """Read the answer's body within the time and size limits.

        A read timeout bounds each wait for data, not a whole answer: a server
        that sends a byte a second would never trip it. So the watchdog shuts
        the socket down when the engine's timeout has passed since the request
        started, and so does the statement's stop signal.
        """
        sock = _socket_of(response)
        token = (
            self._watchdog.watch(sock, started + self.engine.timeout) if sock else None
        )
        watching = isinstance(stop, StopSignal) and sock is not None
        if watching:
            stop.watch(sock)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > MAX_BODY:
                    raise HfFdwError(
                        f"answer from {host} is too large",
                        detail=f"more than {MAX_BODY} bytes",
                        hint="ask for less (parameters such as top_k), or use "
                        "another endpoint",
                    )
                chunks.append(chunk)
        except (requests.RequestException, OSError) as exc:
            if time.monotonic() - started >= self.engine.timeout:
                raise requests.Timeout() from exc
            if stop is not None and stop.is_set():
                raise Stopped() from exc
            raise
        finally:
            if token is not None:
                self._watchdog.release(token)
            if watching:
                stop.forget(sock)
            response.close()
        if time.monotonic() - started >= self.engine.timeout and sock is not None:
            # The watchdog cut the socket; what arrived may look like a clean end.
            raise requests.Timeout()
        response._content = b"".join(chunks)

    def _decode(self, response: requests.Response, host: str) -> Any:
        """JSON, or for an image or a sound (text-to-image) the raw bytes."""
        content_type = response.headers.get("Content-Type", "").split(";")[0]
        if content_type.startswith(("image/", "audio/")):
            return RawBody(response.content, content_type)
        try:
            return response.json()
        except ValueError:
            raise HfFdwError(
                f"answer from {host} is not JSON",
                detail=self.scrub(response.text)[:300],
                hint="check that the endpoint speaks the Hugging Face "
                "inference protocol",
            ) from None

    def _backoff(self, attempt: int, response: requests.Response | None) -> float:
        """Seconds to wait before the next attempt, from the server's advice."""
        if response is not None:
            retry_after = response.headers.get("Retry-After")
            if retry_after:
                try:
                    return min(MAX_WAIT, max(0.0, float(retry_after)))
                except ValueError:
                    pass
            try:
                estimated = response.json().get("estimated_time")
            except (ValueError, AttributeError):
                estimated = None
            if isinstance(estimated, (int, float)) and estimated >= 0:
                return min(MAX_WAIT, float(estimated))
        base = min(MAX_WAIT, 0.5 * 2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)
