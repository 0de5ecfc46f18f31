"""What a backend spent and remembers: usage, the cache, EXPLAIN, verbose;
and the upgrade from 0.1.0."""

from __future__ import annotations

from typing import Any

import pytest
from fix_http import spam_classifier

psycopg = pytest.importorskip("psycopg", reason="psycopg (3) is not installed")

PATH = "/models/acme/spam"


@pytest.fixture
def spam(db: Any, endpoint: Any) -> Any:
    endpoint.respond(PATH, spam_classifier)
    db.execute("SELECT hf_fdw.create_engine('local', endpoint => %s)", (endpoint.url,))
    db.execute(
        "SELECT hf_fdw.create_model('spam', 'label', 'local', "
        "task => 'text-classification', model_name => 'acme/spam', "
        'labels => \'["ham", "spam"]\')'
    )
    return db


def test_cache_serves_later_statements_and_can_be_cleared(
    spam: Any, endpoint: Any
) -> None:
    query = "SELECT label FROM spam WHERE text IN ('win a free prize', 'hello')"
    assert spam.execute(query).fetchall() == [("spam",), ("ham",)]
    assert spam.execute(query).fetchall() == [("spam",), ("ham",)]
    assert len(endpoint.requests) == 2
    assert spam.execute("SELECT entries FROM hf_fdw.cache").fetchone() == (2,)
    assert spam.execute("SELECT hf_fdw.clear_cache()").fetchone() == (2,)
    assert spam.execute("SELECT entries FROM hf_fdw.cache").fetchone() == (0,)
    assert spam.execute(query).fetchall() == [("spam",), ("ham",)]
    assert len(endpoint.requests) == 4


def test_changed_parameters_miss_the_cache(spam: Any, endpoint: Any) -> None:
    spam.execute("SELECT label FROM spam WHERE text = 'hello'").fetchall()
    spam.execute("ALTER FOREIGN TABLE spam OPTIONS (ADD parameters '{\"top_k\": 2}')")
    spam.execute("SELECT label FROM spam WHERE text = 'hello'").fetchall()
    assert [r.json for r in endpoint.requests] == [
        {"inputs": "hello"},
        {"inputs": "hello", "parameters": {"top_k": 2}},
    ]


def test_cache_can_be_turned_off_per_model(spam: Any, endpoint: Any) -> None:
    spam.execute("ALTER FOREIGN TABLE spam OPTIONS (ADD cache_ttl '0')")
    for _ in range(2):
        spam.execute("SELECT label FROM spam WHERE text = 'hello'").fetchall()
    assert len(endpoint.requests) == 2


def test_usage_counts_requests_hits_and_errors(spam: Any, endpoint: Any) -> None:
    spam.execute("SELECT label FROM spam WHERE text IN ('a', 'b', 'c')").fetchall()
    spam.execute("SELECT label FROM spam WHERE text IN ('a', 'b')").fetchall()
    row = spam.execute(
        "SELECT engine, model, task, requests, retries, cache_hits, errors, "
        "seconds > 0 FROM hf_fdw.usage"
    ).fetchone()
    assert row == ("local", "acme/spam", "text-classification", 3, 0, 2, 0, True)


def test_explain_shows_model_endpoint_and_inputs(spam: Any, endpoint: Any) -> None:
    spam.execute("SELECT label FROM spam WHERE text = 'hello'").fetchall()
    plan = [
        row[0]
        for row in spam.execute(
            "EXPLAIN SELECT label FROM spam WHERE text IN ('hello', 'a', 'b', NULL)"
        )
    ]
    host = endpoint.url.removeprefix("http://")
    assert (
        f"  Multicorn: hf_fdw: task text-classification, model acme/spam, "
        f"endpoint {host}" in plan
    )
    assert "  Multicorn: hf_fdw: 3 input(s), 1 cached, 2 to send" in plan
    assert endpoint.requests_to(PATH)[-1].json == {"inputs": "hello"}
    assert len(endpoint.requests) == 1  # EXPLAIN itself sent nothing


def test_verbose_reports_each_batch(spam: Any) -> None:
    spam.execute("ALTER FOREIGN TABLE spam OPTIONS (ADD verbose 'true')")
    notices: list[str] = []
    spam.add_notice_handler(lambda n: notices.append(n.message_primary))
    spam.execute("SELECT label FROM spam WHERE text IN ('a', 'b')").fetchall()
    assert len(notices) == 1
    assert notices[0].startswith("hf_fdw: 2 request(s) to http://127.0.0.1:")
    assert notices[0].endswith(", 0 from cache")


def test_describe_model_shows_settings(spam: Any) -> None:
    spam.execute(
        "ALTER FOREIGN TABLE spam OPTIONS (ADD on_error 'null', ADD max_requests '50')"
    )
    described = dict(
        spam.execute("SELECT * FROM hf_fdw.describe_model('spam')").fetchall()
    )
    assert described["settings"] == "max_requests=50, on_error=null"


def test_upgrade_from_0_1_0_keeps_models_and_matches_a_fresh_install(
    postgres: Any, endpoint: Any
) -> None:
    """ALTER EXTENSION ... UPDATE gives what CREATE EXTENSION gives."""
    members = (
        "SELECT pg_describe_object(classid, objid, 0) FROM pg_depend "
        "WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e' "
        "AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'hf_fdw') "
        "ORDER BY 1"
    )
    if "dbname=hf_fdw_test" not in postgres.dsn:
        pytest.skip("needs the throwaway cluster, where it may create a database")
    endpoint.respond(PATH, spam_classifier)
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS hf_fdw_upgrade")
        admin.execute("CREATE DATABASE hf_fdw_upgrade")
    dsn = postgres.dsn.replace("dbname=hf_fdw_test", "dbname=hf_fdw_upgrade")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION hf_fdw VERSION '0.1.0' CASCADE")
            conn.execute(
                "SELECT hf_fdw.create_engine('local', endpoint => %s)", (endpoint.url,)
            )
            conn.execute(
                "SELECT hf_fdw.create_model('spam', 'label', 'local', "
                "task => 'text-classification', model_name => 'acme/spam')"
            )
            conn.execute("ALTER EXTENSION hf_fdw UPDATE TO '0.2.0'")
            upgraded = [row[0] for row in conn.execute(members)]
            assert conn.execute(
                "SELECT label FROM spam WHERE text = 'win a free prize'"
            ).fetchone() == ("LABEL_1",)
            assert conn.execute("SELECT requests FROM hf_fdw.usage").fetchone() == (1,)
            conn.execute("SELECT hf_fdw.drop_engine('local', cascade => true)")
            conn.execute("DROP EXTENSION hf_fdw")
            conn.execute("CREATE EXTENSION hf_fdw")
            fresh = [row[0] for row in conn.execute(members)]
            assert conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'hf_fdw'"
            ).fetchone() == ("0.2.0",)
        assert upgraded == fresh
        assert "foreign table hf_fdw.usage" in fresh
    finally:
        with psycopg.connect(postgres.dsn, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS hf_fdw_upgrade")
