"""A real PostgreSQL with Multicorn2 and hf_fdw, for the in-database tests.

Three ways, tried in order:

1. ``HF_FDW_TEST_DSN``: a database you prepared (Multicorn2 installed, the
   extension files installed, the server able to import ``hf_fdw``); the
   tests create the extension there and drop every engine they made;
2. where this machine has PostgreSQL's server binaries and Multicorn2: a
   throwaway cluster made with this machine's server binaries
   (``pg_config``), listening on 127.0.0.1 only, with a copy of this
   checkout's ``hf_fdw`` package on the server's PYTHONPATH;
3. otherwise, where a Docker engine is reachable: the image of
   ``docker/Dockerfile`` (PostgreSQL 16 with Multicorn2 from PGDG's packages),
   built and started through testcontainers, on the host's network so that
   it reaches the test endpoints on 127.0.0.1.

When none can be had (no server binaries, no Multicorn2), every test that
needs PostgreSQL skips with one reason saying what is missing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hf_fdw.cluster import LocalCluster, missing_prerequisite

ROOT = Path(__file__).resolve().parent.parent


class DockerDatabase:
    """The docker/ image, through testcontainers."""

    def __init__(self) -> None:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.image import DockerImage
        from testcontainers.core.waiting_utils import wait_for_logs

        self.image = DockerImage(
            path=str(ROOT), dockerfile_path="docker/Dockerfile", tag="hf_fdw:test"
        )
        self.image.build()
        self.port = _free_port()
        self.container = (
            DockerContainer(str(self.image))
            .with_env("POSTGRES_HOST_AUTH_METHOD", "trust")
            .with_command(f"-c port={self.port}")
            .with_kwargs(network_mode="host")
        )
        self.container.start()
        wait_for_logs(self.container, "ready to accept connections", timeout=120)
        self.dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def server_log(self) -> str:
        out, err = self.container.get_logs()
        return (out + err).decode(errors="replace")

    def close(self) -> None:
        self.container.stop()


def _docker_reachable() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:  # no client library, no engine, no permission
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ExternalDatabase:
    """A database named by HF_FDW_TEST_DSN; its server log is not readable."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def server_log(self) -> str:
        return ""

    def close(self) -> None:
        pass


def sql_error(db: Any, statement: str, params: Any = None) -> Any:
    """Run a statement that must fail; return psycopg's error."""
    import psycopg

    with pytest.raises(psycopg.Error) as caught:
        db.execute(statement, params)
    return caught.value


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalCluster | DockerDatabase | ExternalDatabase]:
    """A running PostgreSQL where hf_fdw can be created, or a skip."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg (3) is not installed")
    server: LocalCluster | DockerDatabase | ExternalDatabase
    if os.environ.get("HF_FDW_TEST_DSN"):
        server = ExternalDatabase(os.environ["HF_FDW_TEST_DSN"])
    else:
        reason = missing_prerequisite()
        if reason and _docker_reachable():
            server = DockerDatabase()
        elif reason:
            pytest.skip(f"no PostgreSQL with Multicorn2: {reason}")
        else:
            server = LocalCluster()
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE hf_fdw_test")
        server.dsn = server.dsn.replace("dbname=postgres", "dbname=hf_fdw_test")

    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS hf_fdw CASCADE")
    yield server
    server.close()


@pytest.fixture
def db(postgres: LocalCluster | DockerDatabase | ExternalDatabase) -> Iterator:
    """An autocommit connection; every engine and model is dropped afterwards."""
    import psycopg

    conn = psycopg.connect(postgres.dsn, autocommit=True)
    yield conn
    conn.close()
    with psycopg.connect(postgres.dsn, autocommit=True) as cleanup:
        engines = cleanup.execute("SELECT name FROM hf_fdw.engines").fetchall()
        for (name,) in engines:
            cleanup.execute("SELECT hf_fdw.drop_engine(%s, cascade => true)", (name,))
