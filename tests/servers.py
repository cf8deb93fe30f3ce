"""Throwaway servers for tests: a PostgreSQL cluster in a temporary folder, and a team `mlflow server` on it.

The team server comes plain or with MLflow's basic-auth app (users, passwords, per-experiment rights).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from pipelines.ui import free_port, mlflow_server

SUPERUSER = "postgres"  # the cluster's superuser, whoever runs it; it logs in over the unix socket only
AS_ROOT = os.geteuid() == 0  # PostgreSQL refuses to run as root: then the `postgres` system user runs it


@dataclass
class Postgres:
    """A running cluster: TCP on 127.0.0.1:port (password), its unix socket in `folder` (superuser, no password)."""

    folder: Path
    port: int

    def connect(self, database: str = "postgres") -> Any:
        """A psycopg connection as the superuser, over the unix socket; autocommit on."""
        import psycopg

        return psycopg.connect(host=str(self.folder), port=self.port, user=SUPERUSER, dbname=database, autocommit=True)

    def query(self, sql: str, database: str = "postgres") -> list[tuple]:
        """The rows `sql` returns in `database` (read as the superuser)."""
        with self.connect(database) as connection:
            return connection.execute(sql).fetchall()

    def create_database(self, name: str, owner: str) -> str:
        """A new login role `owner` with a random password and a database it owns; its URI for MLflow."""
        from psycopg import sql

        password = secrets.token_hex(12)
        with self.connect() as connection:
            role = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(owner), sql.Literal(password))
            connection.execute(role)
        self.add_database(name, owner)
        # The driver named: SQLAlchemy 2.0 reads a bare postgresql:// as psycopg2, 2.1 as psycopg (3).
        return f"postgresql+psycopg://{owner}:{password}@127.0.0.1:{self.port}/{name}"

    def add_database(self, name: str, owner: str) -> None:
        """A database owned by the existing role `owner` (`createdb --owner`)."""
        from psycopg import sql

        with self.connect() as connection:
            connection.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner))
            )


@dataclass
class TeamServer:
    """An `mlflow server` whose backend store is a PostgreSQL database and whose artifacts go to a folder."""

    url: str
    store_uri: str
    artifacts: Path
    postgres: Postgres
    database: str


def postgres_bin() -> Path:
    """The folder of the newest PostgreSQL server binaries (Debian keeps them off PATH)."""
    found = [Path(p).parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    found.sort(key=lambda folder: [int(n) for n in re.findall(r"\d+", folder.parent.name)] or [0])
    if found:
        return found[-1]
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise RuntimeError("PostgreSQL's initdb not found: apt-get install -y postgresql (bash .ci/run does)")


@contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """initdb a cluster in a new temporary folder, start it on a free port, stop and delete it afterwards."""
    binaries = postgres_bin()
    # Not pytest's tmp_path: as root that sits under /tmp/pytest-of-root (mode 0700), out of `postgres`'s reach.
    # Short, too: the unix socket's path must fit in 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="descent-pg-"))
    if AS_ROOT:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            raise RuntimeError("no `postgres` user to run PostgreSQL as: apt-get install -y postgresql") from None
        os.chown(folder, account.pw_uid, account.pw_gid)
    data, log = folder / "data", folder / "postgres.log"
    port = free_port()
    try:
        _as_owner(
            [binaries / "initdb", "-D", data, "-U", SUPERUSER, "-E", "UTF8", "--no-locale", "--no-sync"]
            + ["--auth-local=trust", "--auth-host=scram-sha-256"],
            folder,
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": f"'{folder}'",
            # a throwaway cluster: durability only costs time here
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with open(data / "postgresql.conf", "a") as conf:  # appending keeps the file's owner
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        try:
            _as_owner([binaries / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "start"], folder)
        except RuntimeError as exc:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
            raise RuntimeError("\n".join([str(exc), *tail])) from None
        yield Postgres(folder, port)
    finally:
        try:
            if (data / "postmaster.pid").exists():  # running, even if `start` gave up waiting
                _as_owner([binaries / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def mlflow_on_postgres(artifacts: Path) -> Iterator[TeamServer]:
    """A throwaway PostgreSQL cluster, database `mlflow` owned by role `mlflow`, and `mlflow server` on both."""
    with postgres_cluster() as postgres:
        store_uri = postgres.create_database("mlflow", owner="mlflow")
        with mlflow_server(store_uri, free_port(), artifacts=artifacts) as url:
            yield TeamServer(url, store_uri, artifacts, postgres, "mlflow")


@dataclass
class AuthServer(TeamServer):
    """A team server behind MLflow's basic-auth app: `passwords` of its users, the admin's included."""

    passwords: dict[str, str] = field(default_factory=dict)

    def login(self, user: str | None) -> dict[str, str]:
        """The environment that signs MLflow's clients in as `user` (no login for None)."""
        if user is None:
            return {}
        return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": self.passwords[user]}

    @contextmanager
    def as_user(self, user: str) -> Iterator[None]:
        """Sign this process's MLflow clients in as `user` for the duration."""
        with pytest.MonkeyPatch.context() as patch:
            for key, value in self.login(user).items():
                patch.setenv(key, value)
            yield

    def add_user(self, user: str, password: str | None = None) -> str:
        """Create `user` through MLflow's user API (as the admin), with a random password unless given; returns it."""
        from mlflow.server import get_app_client

        self.passwords[user] = password or secrets.token_urlsafe(16)
        with self.as_user(ADMIN):
            get_app_client("basic-auth", tracking_uri=self.url).create_user(user, self.passwords[user])
        return self.passwords[user]

    def grant(self, user: str, kind: str, resource: str, permission: str) -> None:
        """Give `user` a permission (READ, EDIT, MANAGE) on an experiment (by id) or a registered model (by name)."""
        from mlflow.server import get_app_client

        with self.as_user(ADMIN):
            get_app_client("basic-auth", tracking_uri=self.url).grant_user_permission(user, kind, resource, permission)


ADMIN = "admin"


@contextmanager
def mlflow_with_auth(folder: Path) -> Iterator[AuthServer]:
    """The team server with MLflow's basic-auth app, set up as the README's Team setup says; files in `folder`.

    Backend store and auth database are two databases of one PostgreSQL cluster, owned by role `mlflow`;
    every secret (the role's password, the admin's password, the Flask secret key) is in the server's
    environment only: the URIs and the auth config file hold none.
    """
    with postgres_cluster() as postgres:
        password = urlsplit(postgres.create_database("mlflow", owner="mlflow")).password
        postgres.add_database("mlflow_auth", owner="mlflow")
        artifacts, config = folder / "artifacts", folder / "basic_auth.ini"
        config.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = postgresql+psycopg://mlflow@127.0.0.1:{postgres.port}/mlflow_auth\n"
            f"admin_username = {ADMIN}\n"
            # a password check costs 0.1-0.2 s of CPU (scrypt): once a minute per login, not once per request
            "auth_cache_ttl_seconds = 60\n"
        )
        admin = secrets.token_urlsafe(16)
        secrets_env = {
            "PGPASSWORD": password,  # libpq's: the role's password for both databases, out of every URI
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        }
        store_uri = f"postgresql+psycopg://mlflow@127.0.0.1:{postgres.port}/mlflow"
        with mlflow_server(store_uri, free_port(), artifacts=artifacts, app_name="basic-auth", env=secrets_env) as url:
            yield AuthServer(url, store_uri, artifacts, postgres, "mlflow", passwords={ADMIN: admin})


def _as_owner(command: list[Any], folder: Path) -> None:
    """Run a PostgreSQL tool as the cluster's owner: this user, or `postgres` when this user is root."""
    command = [str(part) for part in command]
    if AS_ROOT:
        command = ["runuser", "-u", "postgres", "--", *command]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no PGDATA/PGPORT from outside
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()[-2000:]
        raise RuntimeError(f"{' '.join(command)} failed with code {done.returncode}: {output}")
