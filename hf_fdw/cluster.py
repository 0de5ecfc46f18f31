"""A throwaway PostgreSQL cluster with Multicorn2 and hf_fdw, for tests and the demo.

The cluster is made with this machine's server binaries (``pg_config``),
listens on 127.0.0.1 on a free port only, runs as a non-root user (as root:
``postgres``), and gets a copy of this ``hf_fdw`` package on the server's
PYTHONPATH, so that the embedded Python imports the code of this checkout.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SQL_DIR = PACKAGE_DIR.parent / "sql"


def pg_config(flag: str) -> str | None:
    pg_config = os.environ.get("PG_CONFIG") or shutil.which("pg_config")
    if not pg_config:
        return None
    try:
        return subprocess.run(
            [pg_config, flag], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _install_extension_files(sharedir: Path) -> str | None:
    """Make the server's copy of hf_fdw's SQL files match the checkout's."""
    target = sharedir / "extension"
    if not SQL_DIR.is_dir():
        if (target / "hf_fdw.control").exists():
            return None
        return "hf_fdw's SQL files are not installed: run 'make -C sql install'"
    for source in [SQL_DIR / "hf_fdw.control", *SQL_DIR.glob("hf_fdw--*.sql")]:
        installed = target / source.name
        if installed.exists() and installed.read_bytes() == source.read_bytes():
            continue
        try:
            shutil.copyfile(source, installed)
        except OSError:
            return (
                f"the server's {installed} differs from the checkout's and cannot "
                "be written: run 'make -C sql install' as a user who can"
            )
    return None


def missing_prerequisite() -> str | None:
    """Why a local cluster cannot be made here, or None when it can."""
    bindir = pg_config("--bindir")
    sharedir = pg_config("--sharedir")
    pkglibdir = pg_config("--pkglibdir")
    if not (bindir and sharedir and pkglibdir):
        return "PostgreSQL server development files (pg_config) are not installed"
    if not (Path(bindir) / "initdb").exists():
        return f"no PostgreSQL server binaries in {bindir}"
    if not (Path(sharedir) / "extension" / "multicorn.control").exists():
        return (
            "Multicorn2 is not installed for this PostgreSQL "
            f"({sharedir}/extension/multicorn.control is missing); see README, Install"
        )
    return _install_extension_files(Path(sharedir))


class LocalCluster:
    """A throwaway cluster owned by a non-root user, removed on close."""

    def __init__(self, environment: Mapping[str, str] | None = None) -> None:
        self.environment = dict(environment or {})
        self.bindir = Path(pg_config("--bindir") or "")
        self.port = _free_port()
        self.base = Path(tempfile.mkdtemp(prefix="hf_fdw_pg_"))
        self.datadir = self.base / "data"
        self.pythonpath = self.base / "python"
        self.logfile = self.base / "server.log"
        self.dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                raise RuntimeError(
                    "running as root needs a 'postgres' user to own the cluster"
                ) from None

        shutil.copytree(
            PACKAGE_DIR,
            self.pythonpath / "hf_fdw",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        self.base.chmod(0o755)
        if self.user:
            record = pwd.getpwnam(self.user)
            for path in [self.base, *self.base.rglob("*")]:
                os.chown(path, record.pw_uid, record.pw_gid)

        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.base}'",
            "jit": "off",
            "log_min_messages": "warning",
            "fsync": "off",
        }
        with open(self.datadir / "postgresql.conf", "a") as conf:
            for name, value in settings.items():
                conf.write(f"{name} = {value}\n")
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "start"
        )

    def server_log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def _run(self, program: str, *args: str) -> None:
        env = {
            "PATH": f"{self.bindir}:/usr/bin:/bin",
            "PYTHONPATH": str(self.pythonpath),
            "LANG": "C.UTF-8",
            **self.environment,
        }
        subprocess.run(
            [str(self.bindir / program), *args],
            env=env,
            user=self.user,
            cwd=str(self.base),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def close(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "stop")
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.base, ignore_errors=True)
