"""A real PostgreSQL with Multicorn2 and hf_fdw, for the in-database tests.

Two ways, tried in order:

1. ``HF_FDW_TEST_DSN``: a database you prepared (Multicorn2 installed, the
   extension files installed, the server able to import ``hf_fdw``); the
   tests create the extension there and drop every engine they made;
2. otherwise a throwaway cluster made with this machine's server binaries
   (``pg_config``), listening on 127.0.0.1 only, with a copy of this
   checkout's ``hf_fdw`` package on the server's PYTHONPATH.

When none can be had (no server binaries, no Multicorn2), every test that
needs PostgreSQL skips with one reason saying what is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from hf_fdw.cluster import LocalCluster, missing_prerequisite


class ExternalDatabase:
    """A database named by HF_FDW_TEST_DSN; its server log is not readable."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def server_log(self) -> str:
        return ""

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalCluster | ExternalDatabase]:
    """A running PostgreSQL where hf_fdw can be created, or a skip."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg (3) is not installed")
    server: LocalCluster | ExternalDatabase
    if os.environ.get("HF_FDW_TEST_DSN"):
        server = ExternalDatabase(os.environ["HF_FDW_TEST_DSN"])
    else:
        reason = missing_prerequisite()
        if reason:
            pytest.skip(f"no PostgreSQL with Multicorn2: {reason}")
        server = LocalCluster()
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE hf_fdw_test")
        server.dsn = server.dsn.replace("dbname=postgres", "dbname=hf_fdw_test")

    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS hf_fdw CASCADE")
    yield server
    server.close()


@pytest.fixture
def db(postgres: LocalCluster | ExternalDatabase) -> Iterator:
    """An autocommit connection; every engine and model is dropped afterwards."""
    import psycopg

    conn = psycopg.connect(postgres.dsn, autocommit=True)
    yield conn
    conn.close()
    with psycopg.connect(postgres.dsn, autocommit=True) as cleanup:
        engines = cleanup.execute("SELECT name FROM hf_fdw.engines").fetchall()
        for (name,) in engines:
            cleanup.execute("SELECT hf_fdw.drop_engine(%s, cascade => true)", (name,))
