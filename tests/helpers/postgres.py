"""A throwaway PostgreSQL server for tests: Debian's postgresql-15, a cluster made by initdb in
a temp dir, listening on a free loopback port, stopped and deleted afterwards.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` system
user (the Debian package creates it) and every command runs through `runuser`. The superuser
`deepfleet` has a password and TCP connections need it (scram-sha-256), so tests see a DSN
with a password, as a real deployment has.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from deepfleet.fleet.ports import free_port

BIN_DIRS = [Path(f"/usr/lib/postgresql/{v}/bin") for v in (17, 16, 15)]
USER = "deepfleet"
PASSWORD = "s3cret-pw"
SETUP = "scripts/setup-test-deps.sh"


def pg_bin() -> Path | None:
    for d in BIN_DIRS:
        if (d / "pg_ctl").exists():
            return d
    return None


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    dbname: str

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.dbname}"

    @property
    def dsn_no_password(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    def database(self, name: str) -> Postgres:
        """A fresh database on this server (each test gets its own)."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return Postgres(self.host, self.port, self.user, self.password, name)


def _as_owner(argv: list[str]) -> list[str]:
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """Start a cluster; yield where to reach it; stop it and delete its files."""
    bindir = pg_bin()
    if bindir is None:
        pytest.skip(f"PostgreSQL is not installed: run {SETUP}")
    root = Path(tempfile.mkdtemp(prefix="deepfleet-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        shutil.chown(pwfile, "postgres")
    port = free_port()
    log = root / "server.log"
    run = subprocess.run
    run(
        _as_owner(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off -c max_connections=200"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        log.touch()
        shutil.chown(log, "postgres")
    run(
        _as_owner(
            [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield Postgres("127.0.0.1", port, USER, PASSWORD, "postgres")
    finally:
        run(
            _as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Postgres]:
    """One PostgreSQL server for the test session."""
    with postgres_server() as pg:
        yield pg


@pytest.fixture
def pg(pg_server: Postgres, request: pytest.FixtureRequest) -> Postgres:
    """A fresh, empty database on the session's server for this test."""
    import re

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50]
    return pg_server.database(name)
