"""InferenceClient against the scripted endpoint: answers, errors and retries."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fix_http import Reply, rate_limited
from hf_fdw.client import InferenceClient
from hf_fdw.errors import HfFdwError
from hf_fdw.options import EngineSettings

TOKEN = "hf_TestTokenDoNotLeak0123456789abcdefXYZ"
PATH = "/models/acme/spam"


def engine_for(url: str, **settings: Any) -> EngineSettings:
    values: dict[str, Any] = {
        "name": "local",
        "endpoint": url,
        "timeout": 5.0,
        "max_retries": 2,
        "concurrency": 1,
        "api_key": None,
    }
    values.update(settings)
    return EngineSettings(**values)


class Waits(list):
    """A ``sleep`` that records each wait instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def header(request: Any, name: str) -> str | None:
    for key, value in request.headers.items():
        if key.lower() == name.lower():
            return value
    return None


def post_error(
    client: InferenceClient, url: str, model_id: str = "acme/spam"
) -> HfFdwError:
    with pytest.raises(HfFdwError) as caught:
        client.post(url, {"inputs": "hello"}, model_id)
    return caught.value


def assert_no_token(error: HfFdwError, token: str = TOKEN) -> None:
    """The token, or any long piece of it, is nowhere in the error."""
    texts = [str(error), error.message, error.detail or "", error.hint or ""]
    texts += [str(arg) for arg in error.args]
    for text in texts:
        assert token not in text
        assert token[:10] not in text
        assert token[-10:] not in text


# --- answers -----------------------------------------------------------------


class TestAnswers:
    def test_json_answer_is_decoded(self, endpoint: Any) -> None:
        endpoint.script(PATH, Reply([[{"label": "LABEL_1", "score": 0.9}]]))
        client = InferenceClient(engine_for(endpoint.url))
        answer = client.post(endpoint.url + PATH, {"inputs": "win free"})
        assert answer == [[{"label": "LABEL_1", "score": 0.9}]]
        assert endpoint.requests_to(PATH)[0].json == {"inputs": "win free"}

    def test_body_is_json_with_content_type(self, endpoint: Any) -> None:
        endpoint.script(PATH, Reply([0.5]))
        client = InferenceClient(engine_for(endpoint.url))
        client.post(endpoint.url + PATH, {"inputs": "é 😀"})
        request = endpoint.requests_to(PATH)[0]
        assert header(request, "Content-Type") == "application/json"
        assert request.json == {"inputs": "é 😀"}

    def test_bearer_token_is_sent(self, endpoint: Any) -> None:
        endpoint.script(PATH, Reply([0.5]))
        client = InferenceClient(engine_for(endpoint.url, api_key=TOKEN))
        client.post(endpoint.url + PATH, {"inputs": "x"})
        assert header(endpoint.requests[0], "Authorization") == f"Bearer {TOKEN}"

    def test_no_authorization_header_without_a_key(self, endpoint: Any) -> None:
        endpoint.script(PATH, Reply([0.5]))
        client = InferenceClient(engine_for(endpoint.url))
        client.post(endpoint.url + PATH, {"inputs": "x"})
        assert header(endpoint.requests[0], "Authorization") is None

    def test_non_json_answer_is_a_clear_error(self, endpoint: Any) -> None:
        endpoint.script(PATH, Reply(body=b"<html>Bad gateway page</html>"))
        client = InferenceClient(engine_for(endpoint.url))
        error = post_error(client, endpoint.url + PATH)
        assert error.message.startswith("answer from 127.0.0.1:")
        assert error.message.endswith("is not JSON")
        assert error.detail == "<html>Bad gateway page</html>"
        assert "inference protocol" in error.hint

    def test_non_json_answer_echoing_the_token_hides_it(self, endpoint: Any) -> None:
        page = ("x" * 290 + f" Authorization: Bearer {TOKEN}").encode()
        endpoint.script(PATH, Reply(body=page))
        client = InferenceClient(engine_for(endpoint.url, api_key=TOKEN))
        error = post_error(client, endpoint.url + PATH)
        assert error.message.endswith("is not JSON")
        assert_no_token(error)

    def test_empty_answer_is_not_json(self, endpoint: Any) -> None:
        endpoint.script(PATH, Reply(body=b""))
        client = InferenceClient(engine_for(endpoint.url))
        assert post_error(client, endpoint.url + PATH).message.endswith("is not JSON")


# --- errors that are not retried ---------------------------------------------


class TestRefusals:
    def test_c15_401_carries_the_words_and_the_fix(self, endpoint: Any) -> None:
        endpoint.script(
            PATH,
            Reply({"error": "Invalid credentials in Authorization header"}, status=401),
        )
        client = InferenceClient(engine_for(endpoint.url, api_key=TOKEN))
        error = post_error(client, endpoint.url + PATH)
        assert "answered HTTP 401" in error.message
        assert error.detail == "Invalid credentials in Authorization header"
        assert "hf_fdw.set_api_key('local'" in error.hint
        assert len(endpoint.requests) == 1
        assert_no_token(error)

    def test_c15_401_echoing_the_token_hides_it(self, endpoint: Any) -> None:
        endpoint.script(
            PATH,
            Reply({"error": f"Invalid token: Bearer {TOKEN} was refused"}, status=401),
        )
        client = InferenceClient(engine_for(endpoint.url, api_key=TOKEN))
        error = post_error(client, endpoint.url + PATH)
        assert error.detail == "Invalid token: Bearer <api key> was refused"
        assert_no_token(error)

    def test_c15_token_cut_at_the_end_of_a_long_error_is_hidden(
        self, endpoint: Any
    ) -> None:
        """A key straddling the 500-character cut must not leave its first half."""
        endpoint.script(PATH, Reply({"error": "e" * 490 + TOKEN}, status=401))
        client = InferenceClient(engine_for(endpoint.url, api_key=TOKEN))
        error = post_error(client, endpoint.url + PATH)
        assert error.detail.startswith("e" * 490)
        assert_no_token(error)

    def test_c15_plain_text_error_echoing_the_token(self, endpoint: Any) -> None:
        endpoint.script(PATH, Reply(body=f"bad token {TOKEN}".encode(), status=403))
        client = InferenceClient(engine_for(endpoint.url, api_key=TOKEN))
        error = post_error(client, endpoint.url + PATH)
        assert error.detail == "bad token <api key>"
        assert_no_token(error)

    def test_404_hint_names_the_model(self, endpoint: Any) -> None:
        client = InferenceClient(engine_for(endpoint.url))
        error = post_error(client, endpoint.url + "/models/acme/gone", "acme/gone")
        assert "answered HTTP 404" in error.message
        assert error.detail == "Model acme/gone does not exist"
        assert "model 'acme/gone' is not served" in error.hint
        assert "endpoint =>" in error.hint

    def test_410_hint_names_the_router(self, endpoint: Any) -> None:
        endpoint.script(PATH, Reply({"error": "Gone"}, status=410))
        client = InferenceClient(engine_for(endpoint.url))
        error = post_error(client, endpoint.url + PATH)
        assert "answered HTTP 410" in error.message
        assert "https://router.huggingface.co/hf-inference" in error.hint
        assert len(endpoint.requests) == 1

    @pytest.mark.parametrize(
        ("payload", "words"),
        [
            ({"error": ["too long", "max 512"]}, "too long; max 512"),
            (
                {"error": "Input validation error", "error_type": "validation"},
                "Input validation error (validation)",
            ),
            ({"error": "unknown error", "warnings": ["a", "b"]}, "unknown error; a; b"),
            ({"detail": "nope"}, '{"detail": "nope"}'),
        ],
    )
    def test_400_error_shapes(self, endpoint: Any, payload: Any, words: str) -> None:
        endpoint.script(PATH, Reply(payload, status=422))
        client = InferenceClient(engine_for(endpoint.url))
        error = post_error(client, endpoint.url + PATH)
        assert error.detail == words
        assert error.hint == "the input is too long or not valid for this model"
        assert len(endpoint.requests) == 1


# --- retries -----------------------------------------------------------------


class TestRetries:
    def test_c13_loading_model_answers_after_two_waits(self, endpoint: Any) -> None:
        loading = Reply(
            {"error": "Model x is currently loading", "estimated_time": 0.2},
            status=503,
        )
        endpoint.script(PATH, loading, loading, Reply([0.75]))
        client = InferenceClient(engine_for(endpoint.url, max_retries=3))
        started = time.monotonic()
        answer = client.post(endpoint.url + PATH, {"inputs": "x"})
        elapsed = time.monotonic() - started
        assert answer == [0.75]
        assert len(endpoint.requests) == 3
        assert 0.35 <= elapsed < 3.0

    def test_c13_waits_follow_estimated_time(self, endpoint: Any) -> None:
        loading = Reply({"error": "loading", "estimated_time": 2.0}, status=503)
        endpoint.script(PATH, loading, loading, Reply([0.5]))
        waits = Waits()
        client = InferenceClient(engine_for(endpoint.url, max_retries=3), sleep=waits)
        assert client.post(endpoint.url + PATH, {"inputs": "x"}) == [0.5]
        assert waits == [2.0, 2.0]

    def test_c13_long_estimate_is_capped(self, endpoint: Any) -> None:
        loading = Reply({"error": "loading", "estimated_time": 900.0}, status=503)
        endpoint.script(PATH, loading, Reply([0.5]))
        waits = Waits()
        client = InferenceClient(engine_for(endpoint.url), sleep=waits)
        client.post(endpoint.url + PATH, {"inputs": "x"})
        assert waits == [10.0]

    def test_c13_endless_503_ends_in_a_clear_error(self, endpoint: Any) -> None:
        endpoint.script(
            PATH,
            Reply(
                {"error": "Model x is currently loading", "estimated_time": 20.0},
                status=503,
            ),
        )
        waits = Waits()
        client = InferenceClient(engine_for(endpoint.url, max_retries=2), sleep=waits)
        error = post_error(client, endpoint.url + PATH)
        assert "answered HTTP 503" in error.message
        assert error.detail == "Model x is currently loading"
        assert "max_retries" in error.hint
        assert len(endpoint.requests) == 3
        assert waits == [10.0, 10.0]

    def test_c14_429_retry_after_is_honoured(self, endpoint: Any) -> None:
        endpoint.script(
            PATH,
            rate_limited("1"),
            Reply([[{"label": "LABEL_0", "score": 0.8}]]),
        )
        client = InferenceClient(engine_for(endpoint.url))
        started = time.monotonic()
        answer = client.post(endpoint.url + PATH, {"inputs": "x"})
        elapsed = time.monotonic() - started
        assert answer == [[{"label": "LABEL_0", "score": 0.8}]]
        assert len(endpoint.requests) == 2
        assert 0.9 <= elapsed < 5.0

    def test_c14_429_is_retried_a_bounded_number_of_times(self, endpoint: Any) -> None:
        endpoint.script(
            PATH,
            Reply({"error": "Rate limit"}, status=429, headers={"Retry-After": "1"}),
        )
        waits = Waits()
        client = InferenceClient(engine_for(endpoint.url, max_retries=4), sleep=waits)
        error = post_error(client, endpoint.url + PATH)
        assert "answered HTTP 429" in error.message
        assert error.detail == "Rate limit"
        assert waits == [1.0] * 4
        assert len(endpoint.requests) == 5

    def test_500_backs_off_with_growing_waits(self, endpoint: Any) -> None:
        endpoint.script(PATH, Reply({"error": "boom"}, status=500))
        waits = Waits()
        client = InferenceClient(engine_for(endpoint.url, max_retries=3), sleep=waits)
        post_error(client, endpoint.url + PATH)
        assert len(endpoint.requests) == 4
        assert len(waits) == 3
        for attempt, wait in enumerate(waits, start=1):
            base = 0.5 * 2 ** (attempt - 1)
            assert base / 2 <= wait <= base

    def test_no_retries_when_max_retries_is_zero(self, endpoint: Any) -> None:
        endpoint.script(PATH, Reply({"error": "busy"}, status=502), Reply([1.0]))
        client = InferenceClient(engine_for(endpoint.url, max_retries=0))
        error = post_error(client, endpoint.url + PATH)
        assert "answered HTTP 502" in error.message
        assert len(endpoint.requests) == 1

    def test_400_is_not_retried(self, endpoint: Any) -> None:
        endpoint.script(PATH, Reply({"error": "bad body"}, status=400), Reply([1.0]))
        waits = Waits()
        client = InferenceClient(engine_for(endpoint.url), sleep=waits)
        error = post_error(client, endpoint.url + PATH)
        assert error.detail == "bad body"
        assert waits == []
        assert len(endpoint.requests) == 1


# --- the network fails -------------------------------------------------------


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (just released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def short_body_server() -> Iterator[str]:
    """A server on 127.0.0.1 that promises 100 bytes and sends 8, then hangs up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b'Content-Length: 100\r\n\r\n[{"label'
                )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.close()


class TestNetwork:
    def test_connection_refused(self) -> None:
        url = f"http://127.0.0.1:{free_port()}/models/acme/x"
        waits = Waits()
        client = InferenceClient(engine_for(url, max_retries=2), sleep=waits)
        error = post_error(client, url)
        assert error.message.startswith("inference request to 127.0.0.1:")
        assert error.detail.startswith("could not connect to 127.0.0.1:")
        assert "reachable" in error.hint
        assert client.requests_sent == 3
        assert len(waits) == 2

    def test_read_timeout(self, endpoint: Any) -> None:
        endpoint.script(PATH, Reply([1.0], delay=1.2))
        client = InferenceClient(engine_for(endpoint.url, timeout=0.5, max_retries=0))
        started = time.monotonic()
        error = post_error(client, endpoint.url + PATH)
        elapsed = time.monotonic() - started
        assert error.detail.endswith("within 0.5 s")
        assert error.detail.startswith("no answer from 127.0.0.1:")
        assert elapsed < 1.1

        # Let the late reply fail on the closed socket while output is captured.
        time.sleep(max(0.0, 1.4 - elapsed))

    def test_body_cut_short_is_a_clear_error(self, short_body_server: str) -> None:
        client = InferenceClient(engine_for(short_body_server, max_retries=0))
        error = post_error(client, short_body_server + PATH)
        assert error.message == (f"inference request to {short_body_server[7:]} failed")
        assert error.detail.endswith("failed: ChunkedEncodingError")

    def test_url_requests_cannot_use_is_a_clear_error(self) -> None:
        client = InferenceClient(engine_for("http://127.0.0.1:1", max_retries=0))
        error = post_error(client, "http://127.0.0.1:99999/models/x")
        assert error.message == "inference request to 127.0.0.1:99999 failed"
        assert error.detail.endswith("InvalidURL")


def test_scrub_replaces_the_key() -> None:
    client = InferenceClient(engine_for("http://127.0.0.1:1", api_key=TOKEN))
    assert client.scrub(f"a {TOKEN} b {TOKEN}") == "a <api key> b <api key>"
    assert InferenceClient(engine_for("http://127.0.0.1:1")).scrub("a b") == "a b"


def test_chat_only_model_gets_a_hint(endpoint: Any) -> None:
    """text-generation on a model served only for chat."""
    endpoint.script(
        "/models/acme/chat",
        Reply(
            {
                "error": "Model acme/chat is not supported for task text-generation "
                "and provider hf-inference. Supported task: conversational."
            },
            status=400,
        ),
    )
    client = InferenceClient(
        EngineSettings("local", endpoint.url, timeout=5.0, max_retries=0, concurrency=1)
    )
    with pytest.raises(HfFdwError) as caught:
        client.post(endpoint.url + "/models/acme/chat", {"inputs": "hi"}, "acme/chat")
    assert "Supported task: conversational" in caught.value.detail
    assert caught.value.hint == (
        "model 'acme/chat' is served as a chat model only: register it with "
        "task => 'chat-completion'"
    )


class _RawServer:
    """A socket server on 127.0.0.1 that answers with bytes a test gives."""

    def __init__(self, answer: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = "http://127.0.0.1:%d/models/x" % self.sock.getsockname()[1]
        self.answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                try:
                    self.answer(conn)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def engine_with(url: str, **settings: Any) -> EngineSettings:
    values: dict[str, Any] = {
        "name": "raw",
        "endpoint": url,
        "timeout": 1.0,
        "max_retries": 0,
        "concurrency": 1,
    }
    values.update(settings)
    return EngineSettings(**values)


def test_a_trickling_answer_ends_at_the_engine_timeout() -> None:
    """A byte every 0.2 s never trips a read timeout; the total one ends it."""

    def trickle(conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        for _ in range(100):
            conn.sendall(b" ")
            time.sleep(0.2)

    server = _RawServer(trickle)
    try:
        client = InferenceClient(engine_with(server.url))
        started = time.monotonic()
        with pytest.raises(HfFdwError) as caught:
            client.post(server.url, {"inputs": "x"})
        assert time.monotonic() - started < 2.0
        assert (
            caught.value.detail
            == "no answer from %s within 1 s" % (server.url.split("/")[2])
        )
    finally:
        server.close()


def test_a_huge_compressed_answer_is_stopped(monkeypatch: Any) -> None:
    """Sizes count decompressed bytes: a small gzip bomb is refused."""
    import gzip

    import hf_fdw.client as client_module

    monkeypatch.setattr(client_module, "MAX_BODY", 1_000_000)
    bomb = gzip.compress(b"[" + b" " * 5_000_000 + b"]")

    def send_bomb(conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb
        )

    server = _RawServer(send_bomb)
    try:
        client = InferenceClient(engine_with(server.url, timeout=5.0))
        with pytest.raises(HfFdwError) as caught:
            client.post(server.url, {"inputs": "x"})
        assert caught.value.message.endswith("is too large")
        assert caught.value.detail == "more than 1000000 bytes"
    finally:
        server.close()


def test_redirects_are_refused(endpoint: Any) -> None:
    """Following a 302 would turn the POST into a body-less GET."""
    endpoint.script(
        "/models/moved", Reply({}, status=302, headers={"Location": "/models/new"})
    )
    client = InferenceClient(engine_with(endpoint.url))
    with pytest.raises(HfFdwError) as caught:
        client.post(endpoint.url + "/models/moved", {"inputs": "x"})
    assert "answered a redirect (HTTP 302)" in caught.value.message
    assert caught.value.detail == "to /models/new"
    assert [r.path for r in endpoint.requests] == ["/models/moved"]


def test_stop_signal_cuts_an_answer_being_read() -> None:
    from hf_fdw.client import Stopped, StopSignal

    def slow(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n[")
        time.sleep(5)

    server = _RawServer(slow)
    try:
        client = InferenceClient(engine_with(server.url, timeout=10.0))
        stop = StopSignal()
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        with pytest.raises(Stopped):
            client.post(server.url, {"inputs": "x"}, stop=stop)
        assert time.monotonic() - started < 1.5
    finally:
        server.close()


def test_watchdog_shuts_only_what_is_due() -> None:
    """One thread for all deadlines; a released socket is left alone."""
    from hf_fdw.client import Watchdog

    watchdog = Watchdog()
    due_a, due_b = socket.socketpair()
    kept_a, kept_b = socket.socketpair()
    try:
        watchdog.watch(due_a, time.monotonic() + 0.2)
        token = watchdog.watch(kept_a, time.monotonic() + 0.2)
        watchdog.release(token)
        due_a.settimeout(2.0)
        started = time.monotonic()
        assert due_a.recv(10) == b""  # shut down: the blocked read ends
        assert 0.1 < time.monotonic() - started < 1.5
        kept_b.sendall(b"still open")
        kept_a.settimeout(1.0)
        assert kept_a.recv(10) == b"still open"
        before = threading.active_count()
        for _ in range(50):
            watchdog.release(watchdog.watch(kept_a, time.monotonic() + 60))
        assert threading.active_count() == before
    finally:
        for sock in (due_a, due_b, kept_a, kept_b):
            sock.close()
