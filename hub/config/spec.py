"""The hub.yaml spec: what an operator may write, with defaults and descriptions.

Connector settings are validated by each connector's own spec (see ``plan.py``), so a
new connector adds its fields without touching this file.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from hub.retry import RetryPolicy

__all__ = [
    "ApiSpec",
    "ClientSpec",
    "DatabaseSync",
    "DestinationSpec",
    "HubSpec",
    "ListenerSpec",
    "RouteSpec",
    "Scope",
    "WhenSpec",
    "WorkerSpec",
]

Scope = Literal["ingest", "read", "operate"]
DatabaseSync = Literal["full", "normal"]
Scalar = str | int | float | bool | None
_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_ORDERING = re.compile(r"^(incident|patient|none|field:[A-Za-z0-9_.]+)$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiSpec(_Spec):
    host: str = Field(default="127.0.0.1", description="Address the API binds to.")
    port: int = Field(default=8080, ge=0, le=65535, description="0 picks a free port.")
    max_body_bytes: int = Field(default=5_000_000, gt=0, description="Larger bodies get 413.")


class ClientSpec(_Spec):
    """A partner system calling the API; with no clients configured the API is open (dev)."""

    token: SecretStr = Field(description="Bearer token; from ${ENV}.")
    scopes: list[Scope] = Field(default_factory=lambda: list[Scope](["ingest"]))
    sources: list[str] = Field(
        default_factory=lambda: ["*"], description="Event `source` values it may send."
    )


class WorkerSpec(_Spec):
    poll_interval: float = Field(default=0.2, gt=0, description="Seconds between idle polls.")
    batch_size: int = Field(default=200, ge=1, le=5000, description="Deliveries claimed at once.")
    lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description=(
            "Seconds a claim lasts; its worker renews it every third of this while the "
            "send runs, so only a worker that died or stalled loses its claims."
        ),
    )
    shutdown_grace: float = Field(default=10.0, ge=0, description="Seconds to drain at stop.")
    claim_linger: float = Field(
        default=0.005,
        ge=0,
        le=1.0,
        description=(
            "Seconds a worker that had claimed everything due waits, once woken by new "
            "deliveries that came within this time of the previous ones, before "
            "claiming them, so those arriving close behind are claimed, sent and "
            "recorded together; 0: claim at once. Deliveries farther apart are claimed "
            "at once; a result that frees a slot or unblocks a queue ends the wait."
        ),
    )
    record_linger: float = Field(
        default=0.005,
        ge=0,
        le=1.0,
        description=(
            "Seconds a finished send waits for sends still running to share its commit "
            "(a result that is the last one running is recorded at once); 0: each "
            "finishing moment records what has finished by then."
        ),
    )
    processes: int | Literal["auto"] = Field(
        default=0,
        description=(
            "Worker processes `hub run` starts beside itself, so delivery does not share "
            "the receiving process's CPU core (and GIL); 0 (the default: one process) "
            "delivers inside the hub's own process. `auto`: 1 where the machine has two "
            "CPUs or more, else 0; on two cores it roughly doubled MLLP throughput "
            "(benchmarks/README.md)."
        ),
    )

    @field_validator("processes", mode="before")
    @classmethod
    def _processes(cls, value: Any) -> Any:
        # Before the union, so a bad value is one problem at worker.processes.
        if value == "auto" or (type(value) is int and 0 <= value <= 16):
            return value
        raise ValueError("must be `auto` or a whole number from 0 to 16")

    def process_count(self) -> int:
        """``processes`` as a number, ``auto`` resolved on this machine."""
        if self.processes == "auto":
            return 1 if (os.cpu_count() or 1) >= 2 else 0
        return self.processes


class WhenSpec(_Spec):
    """Filter of a route: every given condition must hold."""

    types: list[str] = Field(
        default_factory=lambda: ["*"], description="Event types; `*` globs: `unit.*`."
    )
    match: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict,
        description="Dotted path in the event → value, or list of accepted values.",
    )
    exists: list[str] = Field(default_factory=list, description="Paths that must be present.")


class RouteSpec(_Spec):
    name: str = Field(pattern=_NAME, description="Unique; recorded on each delivery.")
    when: WhenSpec = Field(default_factory=WhenSpec)
    mapping: str = Field(default="canonical-json", description="Registered mapping name.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Mapping options, e.g. code-table overrides."
    )
    destination: str = Field(description="Name of a destination.")
    ordering_key: str = Field(
        default="incident",
        description="Deliveries sharing a key go in order: incident, patient, none, field:<path>.",
    )

    @field_validator("ordering_key")
    @classmethod
    def _ordering(cls, value: str) -> str:
        if not _ORDERING.match(value):
            raise ValueError("must be incident, patient, none or field:<dotted.path>")
        return value


class DestinationSpec(BaseModel):
    """A partner endpoint; keys other than these are the connector's own settings."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(description="Registered connector name: http, file, mllp, fhir ...")
    retry: str | RetryPolicy = Field(default="default", description="Policy name or inline.")
    max_in_flight: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description=(
            "Deliveries claimed and not yet recorded: being sent, or mapped and waiting "
            "for a connection. Default: the connector's (16; mllp: 8 per connection, at "
            "least 16)."
        ),
    )
    enabled: bool = Field(default=True, description="false: routes to it create nothing.")


class ListenerSpec(BaseModel):
    """A socket the hub listens on; keys other than these are the listener's own settings."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(description="Registered listener name: mllp.")
    enabled: bool = Field(default=True, description="false: not started.")


class HubSpec(_Spec):
    version: Literal[1] = Field(default=1, description="Format version of this file.")
    database_url: str = Field(
        default="sqlite:///hub-data/hub.db", description="SQLAlchemy URL; HUB_DATABASE_URL wins."
    )
    database_sync: DatabaseSync = Field(
        default="full",
        description="SQLite only: when a commit (and so an ACK or 202) counts as durable. "
        "`full` (WAL, synchronous=FULL): every commit is fsynced and survives power loss or "
        "an OS crash. `normal` (WAL, synchronous=NORMAL): a commit survives a crash of the "
        "hub process, but the last commits before an OS crash or power loss may be lost "
        "although they were acknowledged; ~50x cheaper commits. PostgreSQL follows its "
        "own `synchronous_commit`.",
    )
    api: ApiSpec = Field(default_factory=ApiSpec, description="The HTTP API.")
    worker: WorkerSpec = Field(default_factory=WorkerSpec, description="Delivery workers.")
    clients: dict[str, ClientSpec] = Field(
        default_factory=dict, description="Systems allowed to call the API, by name."
    )
    retry_policies: dict[str, RetryPolicy] = Field(
        default_factory=lambda: {"default": RetryPolicy()},
        description="Named policies; `default` is used when a destination names none.",
    )
    destinations: dict[str, DestinationSpec] = Field(
        default_factory=dict, description="Partner endpoints, by name."
    )
    routes: list[RouteSpec] = Field(
        default_factory=list, description="Evaluated in order; every matching route delivers."
    )
    listeners: dict[str, ListenerSpec] = Field(
        default_factory=dict, description="Sockets receiving messages (MLLP), by name."
    )
