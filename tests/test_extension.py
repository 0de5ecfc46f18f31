"""The SQL API: engines, models, their catalog, and what bad input leaves behind."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fix_pg import sql_error
from fix_http import Reply, spam_classifier

from hf_fdw.options import ENGINE_SETTINGS, MODEL_SETTINGS, ROLE_OPTIONS
from hf_fdw.tasks import TASKS

psycopg = pytest.importorskip("psycopg", reason="psycopg (3) is not installed")

TOKEN = "hf_TopSecretToken1234567890"


def foreign_tables(db: Any) -> list[str]:
    return [
        row[0]
        for row in db.execute(
            "SELECT c.relname FROM pg_foreign_table ft "
            "JOIN pg_class c ON c.oid = ft.ftrelid "
            "WHERE c.relnamespace <> 'hf_fdw'::regnamespace ORDER BY 1"
        )
    ]


def models(db: Any) -> list[str]:
    return [row[0] for row in db.execute("SELECT name FROM hf_fdw.models ORDER BY 1")]


@pytest.fixture
def local(db: Any, endpoint: Any) -> Any:
    db.execute("SELECT hf_fdw.create_engine('local', endpoint => %s)", (endpoint.url,))
    return db


def test_task_catalog_matches_the_python_registry(db: Any) -> None:
    rows = db.execute(
        "SELECT task, inputs, predict_type, default_model, input_type FROM hf_fdw.tasks"
    ).fetchall()
    expected = {
        (
            task.name,
            tuple(ROLE_OPTIONS[r] for r in task.roles),
            task.value_type,
            task.default_model,
            "bytea" if task.media else "text",
        )
        for task in TASKS.values()
    }
    assert {(t, tuple(i), p, d, k) for t, i, p, d, k in rows} == expected


class TestEngines:
    def test_create_engine_keeps_the_key_in_a_user_mapping(self, db: Any) -> None:
        assert db.execute(
            "SELECT hf_fdw.create_engine('hosted', %s)", (TOKEN,)
        ).fetchone() == ("hosted",)
        engine = db.execute(
            "SELECT name, endpoint, options::text FROM hf_fdw.engines"
        ).fetchone()
        assert engine == ("hosted", "https://router.huggingface.co/hf-inference", "{}")
        server = db.execute(
            "SELECT srvoptions::text FROM pg_foreign_server WHERE srvname = 'hosted'"
        ).fetchone()[0]
        assert TOKEN not in server
        mapping = db.execute(
            "SELECT usename, umoptions FROM pg_user_mappings WHERE srvname = 'hosted'"
        ).fetchone()
        assert mapping == ("public", [f"api_key={TOKEN}"])

    def test_other_roles_cannot_read_the_key(self, db: Any) -> None:
        db.execute("SELECT hf_fdw.create_engine('hosted', %s)", (TOKEN,))
        db.execute("DROP ROLE IF EXISTS hf_reader")
        db.execute("CREATE ROLE hf_reader")
        try:
            db.execute("SET ROLE hf_reader")
            visible = db.execute(
                "SELECT umoptions FROM pg_user_mappings WHERE srvname = 'hosted'"
            ).fetchall()
            catalog = db.execute(
                "SELECT (SELECT json_agg(e) FROM hf_fdw.engines e)::text, "
                "(SELECT srvoptions::text FROM pg_foreign_server "
                "WHERE srvname = 'hosted')"
            ).fetchone()
            error = sql_error(db, "SELECT * FROM pg_user_mapping")
        finally:
            db.execute("RESET ROLE")
            db.execute("DROP ROLE hf_reader")
        assert visible == [(None,)]
        assert TOKEN not in "".join(str(part) for part in catalog)
        assert "permission denied" in str(error)

    def test_retired_host_is_refused_with_the_router_url(self, db: Any) -> None:
        """Case C8, for an engine."""
        error = sql_error(
            db,
            "SELECT hf_fdw.create_engine('old', "
            "endpoint => 'https://api-inference.huggingface.co')",
        )
        assert error.diag.message_primary == (
            "engine endpoint names the retired host api-inference.huggingface.co"
        )
        assert "https://router.huggingface.co/hf-inference" in error.diag.message_hint
        assert db.execute(
            "SELECT count(*) FROM pg_foreign_server WHERE srvname = 'old'"
        ).fetchone() == (0,)

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            ("'e', endpoint => 'ftp://x'", "engine endpoint is not an http(s) URL"),
            ("'e', endpoint => 'localhost:8080'", "is not an http(s) URL"),
            ("'', endpoint => 'http://127.0.0.1:1'", "engine name must not be empty"),
            ("'e', options => '{\"timeot\": 3}'", "unknown engine option: timeot"),
            ("'e', options => '{\"timeout\": null}'", "engine option timeout cannot"),
            ("'e', options => '[1]'", "engine options must be a JSON object"),
        ],
    )
    def test_bad_engine_arguments(self, db: Any, arguments: str, message: str) -> None:
        error = sql_error(db, f"SELECT hf_fdw.create_engine({arguments})")
        assert message in error.diag.message_primary
        assert db.execute("SELECT count(*) FROM hf_fdw.engines").fetchone() == (0,)
        assert db.execute("SELECT srvname FROM pg_foreign_server").fetchall() == [
            ("hf_fdw_backend",)
        ]

    def test_every_engine_option_is_accepted(self, db: Any) -> None:
        """The SQL check knows every option the Python side reads."""
        defaults = {
            "timeout": 5,
            "max_retries": 1,
            "concurrency": 2,
            "max_requests": 9,
            "on_error": "null",
            "cache_ttl": 1,
            "verbose": True,
            "max_media_bytes": 2048,
            "batch_size": 8,
            "allow_private_urls": False,
            "api_key_env": "HF_TOKEN",
        }
        assert set(defaults) == set(ENGINE_SETTINGS)
        db.execute(
            "SELECT hf_fdw.create_engine('all', endpoint => "
            "'http://127.0.0.1:9', options => %s)",
            (json.dumps(defaults),),
        )
        db.execute("SELECT hf_fdw.create_model('m', 'p', 'all', task => 'fill-mask')")
        assert models(db) == ["m"]

    def test_duplicate_engine(self, local: Any) -> None:
        error = sql_error(local, "SELECT hf_fdw.create_engine('local')")
        assert error.diag.message_primary == 'engine "local" already exists'
        assert "hf_fdw.drop_engine('local')" in error.diag.message_hint

    @pytest.mark.parametrize(
        ("options", "hint"),
        [
            ('{"timeout": -1}', "timeout takes a number from 0.1 to 600"),
            ('{"timeout": "five"}', "timeout takes a number from 0.1 to 600"),
            ('{"max_retries": 2.5}', "max_retries takes a whole number from 0 to 10"),
            ('{"max_retries": "3"}', "max_retries takes a whole number from 0 to 10"),
            ('{"concurrency": 0}', "concurrency takes a whole number from 1 to 64"),
            ('{"on_error": "ignore"}', "on_error takes one of raise, null"),
            ('{"verbose": "yes"}', "verbose takes true or false"),
            ('{"api_key_env": "HF TOKEN"}', "the name of an environment variable"),
        ],
    )
    def test_bad_engine_option_values(self, db: Any, options: str, hint: str) -> None:
        error = sql_error(
            db,
            "SELECT hf_fdw.create_engine('e', endpoint => 'http://127.0.0.1:9', "
            "options => %s)",
            (options,),
        )
        assert error.diag.message_primary.startswith("engine option ")
        assert hint in error.diag.message_hint
        assert db.execute("SELECT count(*) FROM hf_fdw.engines").fetchone() == (0,)

    def test_settings_catalog_matches_the_python_registry(self, db: Any) -> None:
        rows = db.execute(
            "SELECT name, kind, default_value, min_value, max_value, allowed, "
            "per_model FROM hf_fdw.settings"
        ).fetchall()
        kinds = {float: "number", int: "integer", bool: "boolean"}
        expected = set()
        for name, (kind, default, low, high) in ENGINE_SETTINGS.items():
            words = low if isinstance(low, tuple) else None
            sql_kind = kinds.get(kind) or ("word" if words else "variable")
            bounds = (None, None) if words or kind in (str, bool) else (low, high)
            default_text = (
                None
                if default is None
                else str(default).lower()
                if kind is bool
                else f"{default:g}"
                if kind is float
                else str(default)
            )
            expected.add(
                (
                    name,
                    sql_kind,
                    default_text,
                    *bounds,
                    tuple(words) if words else None,
                    name in MODEL_SETTINGS,
                )
            )
        found = {
            (
                n,
                k,
                d,
                None if lo is None else float(lo),
                None if hi is None else float(hi),
                tuple(a) if a else None,
                p,
            )
            for n, k, d, lo, hi, a, p in rows
        }
        assert found == {
            (
                n,
                k,
                d,
                None if lo is None else float(lo),
                None if hi is None else float(hi),
                a,
                p,
            )
            for n, k, d, lo, hi, a, p in expected
        }

    def test_drop_engine_refuses_while_models_use_it(self, local: Any) -> None:
        local.execute(
            "SELECT hf_fdw.create_model('m1', 'label', 'local', "
            "task => 'text-classification')"
        )
        error = sql_error(local, "SELECT hf_fdw.drop_engine('local')")
        assert error.diag.message_primary == 'engine "local" is used by: m1'
        assert "cascade => true" in error.diag.message_hint
        local.execute("SELECT hf_fdw.drop_engine('local', cascade => true)")
        assert models(local) == [] and foreign_tables(local) == []
        assert local.execute("SELECT count(*) FROM hf_fdw.engines").fetchone() == (0,)

    def test_set_api_key_replaces_and_removes(self, local: Any) -> None:
        local.execute("SELECT hf_fdw.set_api_key('local', 'hf_one')")
        local.execute("SELECT hf_fdw.set_api_key('local', 'hf_two')")
        assert local.execute(
            "SELECT umoptions FROM pg_user_mappings WHERE srvname = 'local'"
        ).fetchone() == (["api_key=hf_two"],)
        local.execute("SELECT hf_fdw.set_api_key('local', NULL)")
        assert local.execute(
            "SELECT umoptions FROM pg_user_mappings WHERE srvname = 'local'"
        ).fetchone() == (None,)


class TestModels:
    def test_create_model_makes_a_typed_foreign_table(self, local: Any) -> None:
        local.execute(
            "SELECT hf_fdw.create_model('sim', 'score', 'local', "
            "task => 'sentence-similarity', input_column => 'a', "
            "input_column2 => 'b')"
        )
        local.execute(
            "SELECT hf_fdw.create_model('vec', 'embedding', 'local', "
            "task => 'feature-extraction')"
        )
        local.execute(
            "SELECT hf_fdw.create_model('qa', 'answer', 'local', "
            "task => 'question-answering', input_column => 'q', "
            "context_column => 'ctx')"
        )
        columns = local.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE c.relname IN ('sim', 'vec', 'qa') AND a.attnum > 0 "
            "ORDER BY c.relname, a.attnum"
        ).fetchall()
        assert columns == [
            ("qa", "q", "text"),
            ("qa", "ctx", "text"),
            ("qa", "answer", "text"),
            ("sim", "a", "text"),
            ("sim", "b", "text"),
            ("sim", "score", "double precision"),
            ("vec", "text", "text"),
            ("vec", "embedding", "double precision[]"),
        ]

    def test_task_only_uses_the_default_model(self, local: Any) -> None:
        assert local.execute(
            "SELECT hf_fdw.create_model('sentiment', 'label', 'local', "
            "task => 'text-classification')::text"
        ).fetchone() == ("sentiment",)
        assert local.execute(
            "SELECT model_name FROM hf_fdw.models WHERE name = 'sentiment'"
        ).fetchone() == ("distilbert/distilbert-base-uncased-finetuned-sst-2-english",)
        options = local.execute(
            "SELECT ftoptions FROM pg_foreign_table "
            "WHERE ftrelid = 'sentiment'::regclass"
        ).fetchone()[0]
        assert (
            "model=distilbert/distilbert-base-uncased-finetuned-sst-2-english"
            in options
        )

    @pytest.mark.parametrize(
        ("arguments", "message", "hint"),
        [
            (
                "'m', 'p', 'nope', task => 'fill-mask'",
                'engine "nope" does not exist',
                "hf_fdw.create_engine",
            ),
            ("'m', 'p', 'local'", "give task or model_name", "text-classification"),
            (
                "'m', 'p', 'local', model_name => 'a/b'",
                "task is needed with model_name a/b",
                "task =>",
            ),
            (
                "'m', 'p', 'local', task => 'image-painting'",
                'unknown task "image-painting"',
                "sentence-similarity",
            ),
            (
                "'m', 'p', 'local', task => 'text-generation'",
                "task text-generation has no default model",
                "model_name =>",
            ),
            (
                "'m', 'p', 'local', task => 'question-answering'",
                "task question-answering needs context_column",
                "context_column =>",
            ),
            (
                "'m', 'p', 'local', task => 'sentence-similarity'",
                "task sentence-similarity needs input_column2",
                "input_column2 =>",
            ),
            (
                "'m', 'text', 'local', task => 'fill-mask'",
                'column "text" is used twice',
                "own column",
            ),
            (
                "'m', 'p', 'local', task => 'fill-mask', labels => '3'",
                "labels must be a JSON array or object, not number",
                "by position",
            ),
            (
                "'m', 'p', 'local', task => 'fill-mask', parameters => '[]'",
                "parameters must be a JSON object",
                "top_k",
            ),
            (
                "'m', 'p', 'local', task => 'fill-mask', context_column => 'c'",
                "context_column applies to question-answering only",
                None,
            ),
            (
                "'m', 'p', 'local', task => 'fill-mask', "
                "endpoint => 'http://api-inference.huggingface.co/models/x'",
                "endpoint names the retired host api-inference.huggingface.co",
                "router.huggingface.co",
            ),
            (
                "'m', '', 'local', task => 'fill-mask'",
                "predict must name the column",
                "predict =>",
            ),
        ],
    )
    def test_bad_arguments_leave_nothing_behind(
        self, local: Any, arguments: str, message: str, hint: str | None
    ) -> None:
        error = sql_error(local, f"SELECT hf_fdw.create_model({arguments})")
        assert message in error.diag.message_primary
        if hint:
            assert hint in error.diag.message_hint
        assert models(local) == [] and foreign_tables(local) == []

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            (
                "task => 'zero-shot-classification'",
                "zero-shot-classification needs candidate_labels",
            ),
            (
                "task => 'zero-shot-classification', candidate_labels => '{}'",
                "candidate_labels must be a non-empty list of strings",
            ),
            (
                "task => 'text-classification', labels => '[]'",
                "labels must be a non-empty JSON array or object of strings",
            ),
            (
                "task => 'fill-mask', labels => '[\"a\"]'",
                "labels applies to text-classification, image-classification, "
                "audio-classification only",
            ),
            (
                "task => 'fill-mask', candidate_labels => '{a}'",
                "candidate_labels applies to zero-shot-classification only",
            ),
        ],
    )
    def test_python_validation_rolls_back_the_table(
        self, local: Any, arguments: str, message: str
    ) -> None:
        """What only the wrapper checks still fails the registration whole."""
        error = sql_error(
            local, f"SELECT hf_fdw.create_model('m', 'label', 'local', {arguments})"
        )
        assert message in error.diag.message_primary
        assert models(local) == [] and foreign_tables(local) == []

    def test_duplicate_model(self, local: Any) -> None:
        local.execute(
            "SELECT hf_fdw.create_model('m', 'p', 'local', task => 'fill-mask')"
        )
        error = sql_error(
            local, "SELECT hf_fdw.create_model('m', 'p', 'local', task => 'fill-mask')"
        )
        assert error.diag.message_primary == 'model "m" already exists'
        assert models(local) == ["m"]

    def test_names_with_capitals_spaces_and_quotes(
        self, db: Any, endpoint: Any
    ) -> None:
        engine = 'My "Engine"; it\'s'
        name = "Spam 'Filter' \"v2\""
        endpoint.respond("/models/acme/spam", spam_classifier)
        db.execute(
            "SELECT hf_fdw.create_engine(%s, endpoint => %s)", (engine, endpoint.url)
        )
        db.execute(
            "SELECT hf_fdw.create_model(%s, 'Is Spam', %s, "
            "task => 'text-classification', model_name => 'acme/spam', "
            "input_column => 'Body Text', labels => '[\"ham\", \"spam\"]')",
            (name, engine),
        )
        rows = db.execute(
            'SELECT "Body Text", "Is Spam" FROM "Spam \'Filter\' ""v2""" '
            "WHERE \"Body Text\" = 'win a free prize'"
        ).fetchall()
        assert rows == [("win a free prize", "spam")]
        described = dict(
            db.execute("SELECT * FROM hf_fdw.describe_model(%s)", (name,)).fetchall()
        )
        assert described["engine"] == engine
        assert described["table"] == 'public."Spam \'Filter\' ""v2"""'
        db.execute("SELECT hf_fdw.drop_model(%s)", (name,))
        db.execute("SELECT hf_fdw.drop_engine(%s)", (engine,))
        assert models(db) == [] and foreign_tables(db) == []

    def test_nothing_is_injected_through_names(self, local: Any) -> None:
        local.execute("CREATE TABLE victim (x int)")
        try:
            name = "x (a text) SERVER local; DROP TABLE victim; --"
            local.execute(
                "SELECT hf_fdw.create_model(%s, 'p); DROP TABLE victim; --', "
                "'local', task => 'fill-mask', "
                "input_column => 't'') ; DROP TABLE victim; --')",
                (name,),
            )
            assert models(local) == [name]
            assert local.execute(
                "SELECT to_regclass('victim') IS NOT NULL"
            ).fetchone() == (True,)
        finally:
            local.execute("DROP TABLE IF EXISTS victim")

    def test_describe_model(self, local: Any) -> None:
        local.execute("SELECT hf_fdw.set_api_key('local', %s)", (TOKEN,))
        local.execute(
            "SELECT hf_fdw.create_model('router', 'queue', 'local', "
            "task => 'zero-shot-classification', "
            "candidate_labels => '{refund,faq}', "
            "parameters => '{\"multi_label\": false}')"
        )
        rows = local.execute(
            "SELECT property, value FROM hf_fdw.describe_model('router')"
        ).fetchall()
        described = dict(rows)
        assert described["task"] == "zero-shot-classification"
        assert described["model_name"] == "facebook/bart-large-mnli"
        assert described["candidate_labels"] == "{refund,faq}"
        assert described["parameters"] == '{"multi_label": false}'
        assert described["api_key"] == "in the user mapping for public (hidden)"
        assert described["endpoint"].endswith("/models/facebook/bart-large-mnli")
        assert TOKEN not in repr(rows)

    def test_drop_model(self, local: Any) -> None:
        local.execute(
            "SELECT hf_fdw.create_model('m', 'p', 'local', task => 'fill-mask')"
        )
        local.execute("SELECT hf_fdw.drop_model('m')")
        assert models(local) == [] and foreign_tables(local) == []
        error = sql_error(local, "SELECT hf_fdw.drop_model('m')")
        assert error.diag.message_primary == 'model "m" does not exist'


class TestCatalogFollowsDdl:
    """Catalog rows and foreign objects never disagree, however they are dropped."""

    def test_dropping_the_table_by_hand(self, local: Any) -> None:
        local.execute(
            "SELECT hf_fdw.create_model('m', 'p', 'local', task => 'fill-mask')"
        )
        local.execute("DROP FOREIGN TABLE m")
        assert models(local) == []

    def test_dropping_the_server_by_hand(self, local: Any) -> None:
        local.execute(
            "SELECT hf_fdw.create_model('m', 'p', 'local', task => 'fill-mask')"
        )
        local.execute("DROP SERVER local CASCADE")
        assert models(local) == []
        assert local.execute("SELECT count(*) FROM hf_fdw.engines").fetchone() == (0,)

    def test_dropping_the_schema(self, local: Any) -> None:
        local.execute("CREATE SCHEMA scratch")
        local.execute("SET search_path = scratch, public")
        local.execute(
            "SELECT hf_fdw.create_model('m', 'p', 'local', task => 'fill-mask')"
        )
        assert local.execute("SELECT relation::text FROM hf_fdw.models").fetchone() == (
            "m",
        )
        local.execute("RESET search_path")
        assert local.execute("SELECT relation::text FROM hf_fdw.models").fetchone() == (
            "scratch.m",
        )
        local.execute("DROP SCHEMA scratch CASCADE")
        assert models(local) == []

    def test_renamed_table_stays_registered(self, local: Any) -> None:
        local.execute(
            "SELECT hf_fdw.create_model('m', 'p', 'local', task => 'fill-mask')"
        )
        local.execute("ALTER FOREIGN TABLE m RENAME TO m2")
        assert local.execute(
            "SELECT relation::text FROM hf_fdw.models WHERE name = 'm'"
        ).fetchone() == ("m2",)
        local.execute("SELECT hf_fdw.drop_model('m')")
        assert foreign_tables(local) == []


class TestHandWrittenForeignTables:
    def test_create_foreign_table_by_hand(self, local: Any, endpoint: Any) -> None:
        endpoint.respond("/models/acme/spam", spam_classifier)
        local.execute(
            "CREATE FOREIGN TABLE inbox_check (body text, verdict text) SERVER local "
            "OPTIONS (task 'text-classification', model 'acme/spam', "
            'input_column \'body\', labels \'{"LABEL_0": "ok", "LABEL_1": "junk"}\')'
        )
        assert local.execute(
            "SELECT verdict FROM inbox_check WHERE body = 'win a free prize'"
        ).fetchone() == ("junk",)

    @pytest.mark.parametrize(
        ("definition", "message"),
        [
            ("(text text, label text) OPTIONS (task 'paint')", "unknown task 'paint'"),
            (
                "(text text, label text) OPTIONS (model 'a/b')",
                "option task is required",
            ),
            (
                "(text text, label text) OPTIONS (task 'fill-mask', modle 'a/b')",
                "unknown option 'modle'",
            ),
            (
                "(text text, label int) OPTIONS (task 'fill-mask')",
                "column 'label' has type integer, but task fill-mask gives text",
            ),
            (
                "(body text, label text) OPTIONS (task 'fill-mask')",
                "input_column 'text' is not a column of the table",
            ),
            (
                "(text text, a text, b text) OPTIONS (task 'fill-mask')",
                "cannot tell which column receives the prediction",
            ),
            (
                "(text text, label text) OPTIONS (task 'fill-mask', "
                "endpoint 'https://api-inference.huggingface.co/models/bert')",
                "endpoint names the retired host",
            ),
            (
                "(text text, label text) OPTIONS (task 'fill-mask', parameters '{x')",
                "option parameters is not valid JSON",
            ),
        ],
    )
    def test_bad_options_fail_the_create(
        self, local: Any, definition: str, message: str
    ) -> None:
        error = sql_error(
            local,
            "CREATE FOREIGN TABLE bad "
            + definition.replace(" OPTIONS", " SERVER local OPTIONS", 1),
        )
        assert message in error.diag.message_primary
        assert foreign_tables(local) == []

    def test_bad_alter_fails(self, local: Any) -> None:
        local.execute(
            "CREATE FOREIGN TABLE good (text text, label text) "
            "SERVER local OPTIONS (task 'fill-mask')"
        )
        error = sql_error(
            local, "ALTER FOREIGN TABLE good OPTIONS (SET task 'painting')"
        )
        assert "unknown task 'painting'" in error.diag.message_primary
        assert local.execute(
            "SELECT ftoptions FROM pg_foreign_table WHERE ftrelid = 'good'::regclass"
        ).fetchone() == (["task=fill-mask"],)
        local.execute("DROP FOREIGN TABLE good")


def test_key_never_leaks(db: Any, endpoint: Any, postgres: Any) -> None:
    """Case C15: a refused token is named nowhere."""
    endpoint.respond(
        "/models/acme/spam",
        lambda body: Reply(
            {"error": f"Invalid credentials in Authorization header Bearer {TOKEN}"},
            status=401,
        ),
    )
    db.execute(
        "SELECT hf_fdw.create_engine('local', %s, endpoint => %s)",
        (TOKEN, endpoint.url),
    )
    db.execute(
        "SELECT hf_fdw.create_model('spam', 'label', 'local', "
        "task => 'text-classification', model_name => 'acme/spam')"
    )
    error = sql_error(db, "SELECT * FROM spam WHERE text = 'hello'")
    assert "answered HTTP 401" in error.diag.message_primary
    assert error.diag.message_detail == (
        "Invalid credentials in Authorization header Bearer <api key>"
    )
    assert "hf_fdw.set_api_key('local'" in error.diag.message_hint
    assert endpoint.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"

    explain = db.execute(
        "EXPLAIN VERBOSE SELECT * FROM spam WHERE text = 'x'"
    ).fetchall()
    described = db.execute("SELECT * FROM hf_fdw.describe_model('spam')").fetchall()
    catalog = db.execute(
        "SELECT (SELECT json_agg(e) FROM hf_fdw.engines e)::text,"
        " (SELECT json_agg(m) FROM hf_fdw.models m)::text,"
        " (SELECT json_agg(s.srvoptions) FROM pg_foreign_server s)::text,"
        " (SELECT json_agg(f.ftoptions) FROM pg_foreign_table f)::text"
    ).fetchone()
    server_log = postgres.server_log()
    if server_log:  # an external database's log cannot be read from here
        assert "answered HTTP 401" in server_log
    for text in (str(error), repr(explain), repr(described), repr(catalog), server_log):
        assert TOKEN not in text


class TestServerAlteredByHand:
    def test_rename_follows_to_the_catalog(self, local: Any) -> None:
        local.execute(
            "SELECT hf_fdw.create_model('m', 'p', 'local', task => 'fill-mask')"
        )
        local.execute("ALTER SERVER local RENAME TO renamed")
        assert local.execute(
            "SELECT e.name, m.engine FROM hf_fdw.engines e, hf_fdw.models m"
        ).fetchall() == [("renamed", "renamed")]
        local.execute("SELECT hf_fdw.drop_engine('renamed', cascade => true)")
        assert local.execute("SELECT count(*) FROM hf_fdw.engines").fetchone() == (0,)
        assert models(local) == []

    def test_new_options_follow_and_are_checked(self, local: Any) -> None:
        local.execute(
            "ALTER SERVER local OPTIONS (SET engine_endpoint "
            "'http://127.0.0.1:9/', SET engine_options '{\"timeout\": 7}')"
        )
        assert local.execute(
            "SELECT endpoint, options::text FROM hf_fdw.engines"
        ).fetchone() == ("http://127.0.0.1:9", '{"timeout": 7}')
        error = sql_error(
            local, "ALTER SERVER local OPTIONS (SET engine_options '{\"timeout\": -3}')"
        )
        assert error.diag.message_primary == "engine option timeout cannot be -3"

    def test_credentials_in_an_endpoint_are_refused(self, db: Any) -> None:
        error = sql_error(
            db,
            "SELECT hf_fdw.create_engine('cred', "
            "endpoint => 'http://admin:hunter2@127.0.0.1:9')",
        )
        assert error.diag.message_primary == (
            "engine endpoint must not carry credentials in the URL"
        )

    def test_names_over_63_bytes_are_refused(self, local: Any) -> None:
        error = sql_error(local, "SELECT hf_fdw.create_engine(%s)", ("e" * 64,))
        assert error.diag.message_primary == "engine name is longer than 63 bytes"
        error = sql_error(
            local,
            "SELECT hf_fdw.create_model(%s, 'p', 'local', task => 'fill-mask')",
            ("é" * 32,),
        )
        assert error.diag.message_primary == (
            "a model or column name is longer than 63 bytes"
        )
        assert models(local) == []

    def test_model_tables_are_read_only(self, local: Any) -> None:
        local.execute(
            "SELECT hf_fdw.create_model('m', 'p', 'local', task => 'fill-mask')"
        )
        error = sql_error(local, "INSERT INTO m VALUES ('a', 'b')")
        assert error.diag.message_primary == "a model's predictions cannot be changed"
        assert "JOIN" in error.diag.message_hint


def test_a_failed_call_with_a_bound_key_leaves_it_out_of_the_log(
    db: Any, postgres: Any
) -> None:
    """PostgreSQL logs a failed statement's text, not its bound parameters."""
    db.execute("SELECT hf_fdw.create_engine('dup', endpoint => 'http://127.0.0.1:9')")
    secret = "hf_BoundNeverLogged_42"
    error = sql_error(db, "SELECT hf_fdw.create_engine(%s, %s)", ("dup", secret))
    assert error.diag.message_primary == 'engine "dup" already exists'
    log = postgres.server_log()
    if log:  # an external database's log cannot be read from here
        assert 'engine "dup" already exists' in log
        assert secret not in log


def test_a_missing_python_package_is_explained(db: Any) -> None:
    """What create_engine and CREATE EXTENSION say when hf_fdw cannot import."""
    error = sql_error(
        db,
        "SELECT hf_fdw._explain_import_error('Error in python: ModuleNotFoundError', "
        "'No module named ''hf_fdw''')",
    )
    assert error.diag.message_primary == (
        "the database server's Python cannot import hf_fdw"
    )
    assert "PYTHONPATH" in error.diag.message_hint
    db.execute("SELECT hf_fdw._explain_import_error('division by zero', NULL)")
