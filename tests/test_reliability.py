"""Faults, time limits and cancellation, seen from SQL (cases C13, C14, C16)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fix_pg import sql_error
from fix_http import Reply, rate_limited, spam_classifier

psycopg = pytest.importorskip("psycopg", reason="psycopg (3) is not installed")

PATH = "/models/acme/spam"


@pytest.fixture
def model(db: Any, endpoint: Any) -> Any:
    """A spam model on the scripted endpoint, 30 s timeout, 3 retries."""
    endpoint.respond(PATH, spam_classifier)
    db.execute(
        "SELECT hf_fdw.create_engine('local', endpoint => %s, "
        "options => '{\"timeout\": 30}')",
        (endpoint.url,),
    )
    db.execute(
        "SELECT hf_fdw.create_model('spam', 'label', 'local', "
        "task => 'text-classification', model_name => 'acme/spam', "
        'labels => \'["ham", "spam"]\')'
    )
    return db


def stall(endpoint: Any, seconds: float = 30.0) -> None:
    endpoint.respond(
        PATH, lambda body: Reply([[{"label": "LABEL_0", "score": 1}]], delay=seconds)
    )


def soon_from_another_session(postgres: Any, session: Any, function: str) -> int:
    """In half a second, call ``function`` (pg_cancel_backend...) on a session."""
    pid = session.execute("SELECT pg_backend_pid()").fetchone()[0]

    def call() -> None:
        time.sleep(0.5)
        with psycopg.connect(postgres.dsn, autocommit=True) as other:
            other.execute(f"SELECT {function}(%s)", (pid,))

    threading.Thread(target=call).start()
    return pid


class TestCancellation:
    def test_statement_timeout_ends_a_stalled_request(
        self, model: Any, endpoint: Any
    ) -> None:
        """Case C16: cancelled in about a second; the session goes on."""
        stall(endpoint)
        model.execute("SET statement_timeout = '1s'")
        started = time.monotonic()
        error = sql_error(model, "SELECT label FROM spam WHERE text = 'slow'")
        elapsed = time.monotonic() - started
        assert error.diag.message_primary == (
            "canceling statement due to statement timeout"
        )
        assert elapsed < 2.0
        assert model.execute("SELECT 1").fetchone() == (1,)
        model.execute("RESET statement_timeout")
        endpoint.respond(PATH, spam_classifier)
        assert model.execute(
            "SELECT label FROM spam WHERE text = 'win a free prize'"
        ).fetchone() == ("spam",)

    def test_cancel_from_another_session(
        self, model: Any, endpoint: Any, postgres: Any
    ) -> None:
        stall(endpoint)
        soon_from_another_session(postgres, model, "pg_cancel_backend")
        started = time.monotonic()
        error = sql_error(model, "SELECT label FROM spam WHERE text IN ('a', 'b')")
        assert error.diag.message_primary == "canceling statement due to user request"
        assert time.monotonic() - started < 2.0
        assert model.execute("SELECT 2").fetchone() == (2,)

    def test_terminate_ends_the_backend(
        self, model: Any, endpoint: Any, postgres: Any
    ) -> None:
        stall(endpoint)
        pid = soon_from_another_session(postgres, model, "pg_terminate_backend")
        started = time.monotonic()
        with pytest.raises(psycopg.Error) as caught:
            model.execute("SELECT label FROM spam WHERE text = 'x'")
        assert time.monotonic() - started < 2.5
        assert "terminating connection due to administrator command" in str(
            caught.value
        )
        with psycopg.connect(postgres.dsn, autocommit=True) as fresh:
            for _ in range(20):
                alive = fresh.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()
                if alive == (0,):
                    break
                time.sleep(0.1)
            assert alive == (0,)


class TestRetries:
    def test_loading_model_then_answer(self, model: Any, endpoint: Any) -> None:
        """Case C13: 503 'currently loading' twice, then the prediction."""
        loading = Reply(
            {"error": "Model acme/spam is currently loading", "estimated_time": 0.3},
            status=503,
        )
        answer = Reply(
            [[{"label": "LABEL_1", "score": 0.9}, {"label": "LABEL_0", "score": 0.1}]]
        )
        endpoint.reset()
        endpoint.script(PATH, loading, loading, answer)
        started = time.monotonic()
        assert model.execute("SELECT label FROM spam WHERE text = 'x'").fetchone() == (
            "spam",
        )
        assert time.monotonic() - started >= 0.55
        assert len(endpoint.requests_to(PATH)) == 3

    def test_endless_loading_ends_in_a_clear_error(
        self, model: Any, endpoint: Any
    ) -> None:
        endpoint.reset()
        endpoint.script(
            PATH,
            Reply(
                {
                    "error": "Model acme/spam is currently loading",
                    "estimated_time": 0.1,
                },
                status=503,
            ),
        )
        error = sql_error(model, "SELECT label FROM spam WHERE text = 'x'")
        assert error.diag.message_primary.endswith("answered HTTP 503")
        assert error.diag.message_detail == "Model acme/spam is currently loading"
        assert "max_retries" in error.diag.message_hint
        assert len(endpoint.requests_to(PATH)) == 4  # 1 + max_retries

    def test_rate_limit_honours_retry_after(self, model: Any, endpoint: Any) -> None:
        """Case C14."""
        endpoint.reset()
        endpoint.script(
            PATH,
            rate_limited("1"),
            Reply([[{"label": "LABEL_0", "score": 0.8}]]),
        )
        started = time.monotonic()
        assert model.execute("SELECT label FROM spam WHERE text = 'x'").fetchone() == (
            "ham",
        )
        assert 0.9 <= time.monotonic() - started < 3.0

    def test_rate_limit_storm_stays_within_statement_timeout(
        self, model: Any, endpoint: Any
    ) -> None:
        endpoint.reset()
        endpoint.script(
            PATH,
            rate_limited("5"),
        )
        model.execute("ALTER FOREIGN TABLE spam OPTIONS (ADD max_retries '10')")
        model.execute("SET statement_timeout = '1500ms'")
        started = time.monotonic()
        error = sql_error(model, "SELECT label FROM spam WHERE text = 'x'")
        assert error.diag.message_primary == (
            "canceling statement due to statement timeout"
        )
        assert time.monotonic() - started < 2.5
        time.sleep(0.3)
        # The cancelled retry loop sent nothing more after the cancel.
        assert len(endpoint.requests_to(PATH)) == 1


class TestOnErrorAndCaps:
    def test_on_error_null_gives_nulls_and_one_warning(
        self, model: Any, endpoint: Any
    ) -> None:
        def picky(body: Any) -> Reply:
            if body["inputs"].startswith("bad"):
                return Reply({"error": "Input is not valid UTF-8"}, status=422)
            return spam_classifier(body)

        endpoint.respond(PATH, picky)
        model.execute("ALTER FOREIGN TABLE spam OPTIONS (ADD on_error 'null')")
        notices: list[tuple[str, str, str]] = []
        model.add_notice_handler(  # a Diagnostic is valid in the callback only
            lambda n: notices.append((n.severity, n.message_primary, n.message_detail))
        )
        model.execute("CREATE TEMP TABLE inbox (body text)")
        model.execute(
            "INSERT INTO inbox VALUES ('bad 1'), ('win a free prize'), "
            "('bad 2'), ('hello')"
        )
        rows = model.execute(
            "SELECT i.body, s.label FROM inbox i LEFT JOIN spam s ON s.text = i.body "
            "ORDER BY 1"
        ).fetchall()
        assert rows == [
            ("bad 1", None),
            ("bad 2", None),
            ("hello", "ham"),
            ("win a free prize", "spam"),
        ]
        warnings = [n for n in notices if n[0] == "WARNING"]
        assert len(warnings) == 1
        assert warnings[0][1] == (
            "hf_fdw: 2 prediction(s) failed and were set to NULL (on_error 'null')"
        )
        assert "Input is not valid UTF-8" in warnings[0][2]

    def test_request_cap_per_statement(self, model: Any, endpoint: Any) -> None:
        model.execute("ALTER FOREIGN TABLE spam OPTIONS (ADD max_requests '5')")
        model.execute(
            "CREATE TEMP TABLE many AS "
            "SELECT 'message ' || i AS body FROM generate_series(1, 8) i"
        )
        error = sql_error(
            model, "SELECT count(*) FROM many m JOIN spam s ON s.text = m.body"
        )
        assert error.diag.message_primary == (
            "this statement would send more than 5 requests to model acme/spam"
        )
        assert "max_requests" in error.diag.message_hint
        # Each statement has its own count.
        for _ in range(3):
            assert model.execute(
                "SELECT count(*) FROM spam WHERE text IN ('a', 'b', 'c')"
            ).fetchone() == (3,)
