"""Roles, privileges and keys; and a dump restored into a fresh database."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from fix_pg import sql_error
from fix_http import Reply, spam_classifier

from hf_fdw.cluster import pg_config

psycopg = pytest.importorskip("psycopg", reason="psycopg (3) is not installed")

PATH = "/models/acme/spam"
TOKEN = "hf_RoleSecret0123456789abcdef"


@pytest.fixture
def roles(db: Any) -> Iterator[Any]:
    """Two plain roles: alice (may create engines) and bob (may not)."""
    for role in ("alice", "bob"):
        db.execute(
            f"DROP OWNED BY {role} CASCADE"
            if db.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)
            ).fetchone()
            else "SELECT 1"
        )
        db.execute(f"DROP ROLE IF EXISTS {role}")
        db.execute(f"CREATE ROLE {role}")
    db.execute("GRANT USAGE ON FOREIGN DATA WRAPPER multicorn TO alice")
    db.execute("GRANT CREATE ON SCHEMA public TO alice, bob")
    yield db
    db.execute("RESET ROLE")
    for (name,) in db.execute("SELECT name FROM hf_fdw.engines").fetchall():
        db.execute("SELECT hf_fdw.drop_engine(%s, cascade => true)", (name,))
    for role in ("alice", "bob"):
        db.execute(f"DROP OWNED BY {role} CASCADE")
        db.execute(f"DROP ROLE {role}")


def test_plain_role_registers_and_shares_a_model(roles: Any, endpoint: Any) -> None:
    endpoint.respond(PATH, spam_classifier)
    roles.execute("SET ROLE alice")
    roles.execute(
        "SELECT hf_fdw.create_engine('alices', %s, endpoint => %s)",
        (TOKEN, endpoint.url),
    )
    roles.execute(
        "SELECT hf_fdw.create_model('spam', 'label', 'alices', "
        "task => 'text-classification', model_name => 'acme/spam', "
        'labels => \'["ham", "spam"]\')'
    )
    assert roles.execute(
        "SELECT owner FROM hf_fdw.models WHERE name = 'spam'"
    ).fetchone() == ("alice",)

    roles.execute("SET ROLE bob")
    error = sql_error(roles, "SELECT label FROM spam WHERE text = 'x'")
    assert "permission denied for foreign table spam" in str(error)

    roles.execute("SET ROLE alice")
    roles.execute("GRANT SELECT ON spam TO bob")
    roles.execute("SET ROLE bob")
    assert roles.execute(
        "SELECT label FROM spam WHERE text = 'win a free prize'"
    ).fetchone() == ("spam",)
    assert endpoint.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"
    # Bob uses the key, but cannot read it anywhere.
    assert roles.execute(
        "SELECT umoptions FROM pg_user_mappings WHERE srvname = 'alices'"
    ).fetchall() == [(None,)]
    described = roles.execute("SELECT * FROM hf_fdw.describe_model('spam')").fetchall()
    assert TOKEN not in repr(described)
    assert dict(described)["api_key"] == "in the user mapping for public (hidden)"
    assert TOKEN not in repr(
        roles.execute("SELECT srvoptions FROM pg_foreign_server").fetchall()
    )


def test_creating_engines_needs_usage_on_multicorn(roles: Any) -> None:
    roles.execute("SET ROLE bob")
    error = sql_error(
        roles, "SELECT hf_fdw.create_engine('bobs', endpoint => 'http://127.0.0.1:9')"
    )
    assert "permission denied for foreign-data wrapper multicorn" in str(error)
    roles.execute("RESET ROLE")
    assert roles.execute("SELECT count(*) FROM hf_fdw.engines").fetchone() == (0,)


def test_catalog_cannot_be_written_directly(roles: Any, postgres: Any) -> None:
    roles.execute("ALTER ROLE alice LOGIN")
    alice_dsn = postgres.dsn.replace("user=postgres", "user=alice")
    with psycopg.connect(alice_dsn, autocommit=True) as alice:
        error = sql_error(
            alice,
            "INSERT INTO hf_fdw.engines (name, endpoint) "
            "VALUES ('fake', 'http://127.0.0.1:9')",
        )
        assert "permission denied for table engines" in str(error)
        error = sql_error(
            alice, "SELECT hf_fdw._register_engine('hf_fdw_backend', 'http://x', '{}')"
        )
        assert "you do not own a foreign server named hf_fdw_backend" in str(error)
        error = sql_error(alice, "DELETE FROM hf_fdw.models")
        assert "permission denied for table models" in str(error)
    assert roles.execute("SELECT count(*) FROM hf_fdw.engines").fetchone() == (0,)


def test_others_cannot_drop_or_rekey_a_model(roles: Any, endpoint: Any) -> None:
    roles.execute("SET ROLE alice")
    roles.execute(
        "SELECT hf_fdw.create_engine('alices', endpoint => %s)", (endpoint.url,)
    )
    roles.execute("SELECT hf_fdw.create_model('m', 'p', 'alices', task => 'fill-mask')")
    roles.execute("SET ROLE bob")
    assert "must be owner of foreign table m" in str(
        sql_error(roles, "SELECT hf_fdw.drop_model('m')")
    )
    assert "must be owner of foreign server alices" in str(
        sql_error(roles, "SELECT hf_fdw.set_api_key('alices', 'hf_stolen')")
    )
    assert "must be owner of foreign server alices" in str(
        sql_error(roles, "SELECT hf_fdw.drop_engine('alices', cascade => true)")
    )


def test_per_role_keys(roles: Any, endpoint: Any) -> None:
    """A role's own mapping wins; a role with none gets a clear error."""
    endpoint.respond(PATH, spam_classifier)
    roles.execute(
        "SELECT hf_fdw.create_engine('shared', endpoint => %s)", (endpoint.url,)
    )
    roles.execute(
        "SELECT hf_fdw.set_api_key('shared', 'hf_alices', for_role => 'alice')"
    )
    roles.execute(
        "SELECT hf_fdw.create_model('spam', 'label', 'shared', "
        "task => 'text-classification', model_name => 'acme/spam')"
    )
    roles.execute("GRANT SELECT ON spam TO alice, bob")
    roles.execute("SET ROLE alice")
    roles.execute("SELECT label FROM spam WHERE text = 'x'").fetchall()
    assert endpoint.requests[-1].headers["Authorization"] == "Bearer hf_alices"
    roles.execute("SET ROLE bob")
    roles.execute("SELECT label FROM spam WHERE text = 'y'").fetchall()
    assert "Authorization" not in endpoint.requests[-1].headers


def test_refused_key_error_names_the_fix_not_the_key(roles: Any, endpoint: Any) -> None:
    endpoint.respond(
        PATH,
        lambda body: Reply(
            {"error": "Invalid credentials in Authorization header"}, status=401
        ),
    )
    roles.execute(
        "SELECT hf_fdw.create_engine('shared', %s, endpoint => %s)",
        (TOKEN, endpoint.url),
    )
    roles.execute(
        "SELECT hf_fdw.create_model('spam', 'label', 'shared', "
        "task => 'text-classification', model_name => 'acme/spam')"
    )
    roles.execute("GRANT SELECT ON spam TO bob")
    roles.execute("SET ROLE bob")
    error = sql_error(roles, "SELECT label FROM spam WHERE text = 'x'")
    assert error.diag.message_detail == "Invalid credentials in Authorization header"
    assert "hf_fdw.set_api_key('shared'" in error.diag.message_hint
    assert TOKEN not in str(error)


def _tool(name: str) -> str:
    bindir = pg_config("--bindir")
    path = os.path.join(bindir, name) if bindir else shutil.which(name)
    if not path or not os.path.exists(path):
        pytest.skip(f"{name} is not installed")
    return path


def test_dump_and_restore_round_trip(db: Any, endpoint: Any, postgres: Any) -> None:
    """Engines, keys, models and tables come back, and queries work at once."""
    if "dbname=hf_fdw_test" not in postgres.dsn:
        pytest.skip("needs the throwaway cluster, where it may create databases")
    endpoint.respond(PATH, spam_classifier)
    db.execute(
        "SELECT hf_fdw.create_engine('local', %s, endpoint => %s, "
        "options => '{\"timeout\": 12}')",
        (TOKEN, endpoint.url),
    )
    db.execute(
        "SELECT hf_fdw.create_model('Spam Filter', 'is_spam', 'local', "
        "task => 'text-classification', model_name => 'acme/spam', "
        'labels => \'["ham", "spam"]\')'
    )
    db.execute(
        "CREATE FOREIGN TABLE by_hand (body text, verdict text) SERVER local "
        "OPTIONS (task 'text-classification', model 'acme/spam', "
        "input_column 'body')"
    )
    db.execute("CREATE TABLE messages (id int, body text)")
    db.execute("INSERT INTO messages VALUES (1, 'hello'), (2, 'win a free prize')")

    source = postgres.dsn
    target = source.replace("dbname=hf_fdw_test", "dbname=hf_fdw_restored")
    with psycopg.connect(
        source.replace("dbname=hf_fdw_test", "dbname=postgres"), autocommit=True
    ) as admin:
        admin.execute("DROP DATABASE IF EXISTS hf_fdw_restored")
        admin.execute("CREATE DATABASE hf_fdw_restored")
    try:
        dump = subprocess.run(
            [_tool("pg_dump"), "--dbname", source], capture_output=True, check=True
        ).stdout
        restored = subprocess.run(
            [_tool("psql"), "--dbname", target, "-v", "ON_ERROR_STOP=1", "-q"],
            input=dump,
            capture_output=True,
        )
        assert restored.returncode == 0, restored.stderr.decode()
        with psycopg.connect(target, autocommit=True) as copy:
            assert copy.execute(
                "SELECT name, relation::text, engine, model_name FROM hf_fdw.models"
            ).fetchall() == [("Spam Filter", '"Spam Filter"', "local", "acme/spam")]
            assert copy.execute(
                "SELECT name, options::text FROM hf_fdw.engines"
            ).fetchall() == [("local", '{"timeout": 12}')]
            rows = copy.execute(
                'SELECT m.id, s.is_spam FROM messages m JOIN "Spam Filter" s '
                "ON s.text = m.body ORDER BY m.id"
            ).fetchall()
            assert rows == [(1, "ham"), (2, "spam")]
            assert copy.execute(
                "SELECT verdict FROM by_hand WHERE body = 'hello'"
            ).fetchone() == ("LABEL_0",)
            assert endpoint.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"
            copy.execute("SELECT hf_fdw.drop_engine('local', cascade => true)")
    finally:
        db.execute("DROP TABLE messages")
        with psycopg.connect(
            source.replace("dbname=hf_fdw_test", "dbname=postgres"), autocommit=True
        ) as admin:
            admin.execute("DROP DATABASE IF EXISTS hf_fdw_restored")


class TestEngineUsersCannotTakeTheEngine:
    """A role with USAGE on an engine uses it; it cannot read or redirect it."""

    @pytest.fixture
    def shared(self, roles: Any, endpoint: Any, postgres: Any) -> Iterator[Any]:
        endpoint.respond(PATH, spam_classifier)
        roles.execute(
            "SELECT hf_fdw.create_engine('shared', %s, endpoint => %s)",
            (TOKEN, endpoint.url),
        )
        roles.execute("GRANT USAGE ON FOREIGN SERVER shared TO bob")
        roles.execute("ALTER ROLE bob LOGIN")
        with psycopg.connect(
            postgres.dsn.replace("user=postgres", "user=bob"), autocommit=True
        ) as bob:
            yield bob

    def test_key_is_not_sent_to_a_model_endpoint_elsewhere(
        self, shared: Any, endpoint: Any, _scripted_server: Any
    ) -> None:
        from fix_http import ScriptedServer

        thief = ScriptedServer()
        try:
            thief.script("/steal", Reply([[{"label": "LABEL_0", "score": 1.0}]]))
            shared.execute(
                "SELECT hf_fdw.create_model('steal', 'p', 'shared', "
                "task => 'text-classification', model_name => 'x', endpoint => %s)",
                (thief.url + "/steal",),
            )
            shared.execute("SELECT p FROM steal WHERE text = 'a'").fetchall()
            assert "Authorization" not in thief.requests[0].headers
        finally:
            thief.close()
        # The engine's own host still gets it.
        shared.execute(
            "SELECT hf_fdw.create_model('mine', 'p', 'shared', "
            "task => 'text-classification', model_name => 'acme/spam')"
        )
        shared.execute("SELECT p FROM mine WHERE text = 'b'").fetchall()
        assert endpoint.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"

    @pytest.mark.parametrize(
        "options",
        [
            "engine_endpoint 'http://127.0.0.1:9'",
            'engine_options \'{"api_key_env": "PGDATA"}\'',
            "wrapper 'hf_fdw.BackendStateFDW', view 'usage'",
        ],
    )
    def test_user_mapping_may_hold_only_a_key(self, shared: Any, options: str) -> None:
        error = sql_error(
            shared, f"CREATE USER MAPPING FOR bob SERVER shared OPTIONS ({options})"
        )
        assert error.diag.message_primary == (
            "a user mapping of an hf_fdw engine may hold only api_key"
        )
        assert "hf_fdw.set_api_key" in error.diag.message_hint
        shared.execute(
            "CREATE USER MAPPING FOR bob SERVER shared OPTIONS (api_key 'hf_bobs_own')"
        )

    @pytest.mark.parametrize(
        "option",
        [
            'engine_options \'{"api_key_env": "PGDATA"}\'',
            "api_key 'x'",
            "wrapper 'hf_fdw.BackendStateFDW'",
        ],
    )
    def test_a_table_cannot_set_engine_options(self, shared: Any, option: str) -> None:
        error = sql_error(
            shared,
            "CREATE FOREIGN TABLE t (text text, p text) SERVER shared "
            f"OPTIONS (task 'fill-mask', {option})",
        )
        # (Multicorn itself refuses a wrapper option on a table.)
        assert "cannot set" in error.diag.message_primary.lower()


def test_renaming_an_input_column_is_refused(db: Any, endpoint: Any) -> None:
    db.execute("SELECT hf_fdw.create_engine('local', endpoint => %s)", (endpoint.url,))
    db.execute("SELECT hf_fdw.create_model('m', 'p', 'local', task => 'fill-mask')")
    error = sql_error(db, "ALTER FOREIGN TABLE m RENAME COLUMN text TO body")
    assert (
        error.diag.message_primary == "input_column 'text' is not a column of the table"
    )
    assert db.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'm'::regclass AND attnum = 1"
    ).fetchone() == ("text",)
