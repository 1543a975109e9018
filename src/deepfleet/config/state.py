"""gateway.state: where keys, the usage ledger and rate-limit accounting live.

SQLite (the default) is a file beside the gateway: one host, its workers share it. PostgreSQL
is for several gateway hosts sharing one truth. The DSN in fleet.yaml may not carry a password:
fleet.yaml is copied around and the controller renders the gateway's section into gateway.json,
so a password there would sit in plain text in files. Put it in the environment variable that
`dsn_env` names (a whole DSN), or where libpq looks for it (PGPASSWORD, ~/.pgpass).
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, model_validator

from deepfleet.config.base import Strict

BACKENDS = ("sqlite", "postgres")


class StateError(ValueError):
    """A state backend setting that cannot be used; the message names the field."""


def dsn_fields(dsn: str) -> dict[str, str]:
    """The DSN's parts (URI or key=value form), as libpq reads them."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except Exception as exc:  # psycopg.ProgrammingError: not a DSN
        raise StateError(f"not a PostgreSQL DSN ({type(exc).__name__})") from None


def redact(dsn: str) -> str:
    """The DSN for messages: host, port, database and user, never the password."""
    try:
        parts = dsn_fields(dsn)
    except StateError:
        return "<unparsable DSN>"
    user = parts.get("user", "")
    where = f"{parts.get('host', 'localhost')}:{parts.get('port', '5432')}"
    return f"postgresql://{user + '@' if user else ''}{where}/{parts.get('dbname', '')}"


class StateSpec(Strict):
    backend: Literal["sqlite", "postgres"] = Field(
        "sqlite",
        description="sqlite: keys.db beside the gateway (one host). postgres: one PostgreSQL "
        "database shared by every gateway (several hosts); limits hold across all of them.",
    )
    dsn: str | None = Field(
        None,
        description="postgres: the DSN without a password, e.g. "
        "postgresql://deepfleet@db:5432/deepfleet (the password from PGPASSWORD or ~/.pgpass).",
    )
    dsn_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="postgres: name of an environment variable holding the whole DSN "
        "(password included); read by each gateway and CLI at start, never written anywhere.",
    )
    pool_size: int = Field(
        4, ge=1, le=64, description="postgres: connections each gateway worker keeps open."
    )
    share_fleet: bool = Field(
        False,
        description="postgres: the controller copies the fleet state (fleet.json, the routing "
        "settings, the engines' key) into the database, so gateways on other hosts follow it "
        "(`python -m deepfleet.gateway.remote`; docs/lb.md). The k8s bundle sets it.",
    )

    @model_validator(mode="after")
    def _check(self) -> StateSpec:
        if self.backend == "sqlite":
            if self.dsn or self.dsn_env or self.share_fleet:
                raise ValueError(
                    "dsn, dsn_env and share_fleet are for backend: postgres; remove them"
                )
            return self
        if not self.dsn and not self.dsn_env:
            raise ValueError("backend postgres needs dsn (no password) or dsn_env")
        if self.dsn:
            try:
                parts = dsn_fields(self.dsn)
            except StateError as exc:
                raise ValueError(f"dsn: {exc}") from None
            if parts.get("password"):
                raise ValueError(
                    "dsn must not hold a password (it would be written to gateway.json in "
                    "plain text): name an environment variable in dsn_env, or use PGPASSWORD "
                    "or ~/.pgpass"
                )
        return self

    def gateway_env(self, parent: dict[str, str] | None = None) -> dict[str, str]:
        """What a gateway process needs from its starter's environment to reach the database:
        the variable `dsn_env` names and libpq's own (PGPASSWORD, PGPASSFILE, PGSSLMODE, ...).
        The controller gives its children an allowlist (fleet/environ.py) that holds neither,
        so its gateway launch adds these."""
        if self.backend != "postgres":
            return {}
        source = dict(os.environ) if parent is None else parent
        return {k: v for k, v in source.items() if k.startswith("PG") or k == self.dsn_env}

    def resolve_dsn(self) -> str:
        """The DSN to connect with: dsn_env's value when set (and present), else dsn."""
        if self.dsn_env:
            value = os.environ.get(self.dsn_env)
            if value:
                return value
            if not self.dsn:
                raise StateError(
                    f"gateway.state.dsn_env: the environment variable {self.dsn_env} is not "
                    "set; export it (the whole DSN) in the gateway's and the CLI's environment"
                )
        assert self.dsn is not None
        return self.dsn
