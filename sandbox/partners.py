"""Every simulated partner, started together, and the hub.yaml that routes to them.

Used by `hub sandbox` and by the acceptance tests, so what a developer runs on a laptop
is exactly what the tests exercise.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.fhir_twin import FhirServerTwin
from sandbox.his_twin import HisTwin
from sandbox.http_receiver import HttpReceiverTwin, ServerThread

__all__ = ["SECRET_ENV", "SandboxPartners", "sandbox_config"]

SECRET_ENV = "HUB_SANDBOX_WEBHOOK_SECRET"

# Events a HIS registration (ADT) and a result message (ORU) are made from.
ADT_EVENTS = ["patient.identified", "assessment.updated", "destination.assigned"]
ADT_EVENTS += ["incident.cancelled"]
ORU_EVENTS = ["vitals.recorded", "ecg.acquired"]


def sandbox_config(
    workdir: Path,
    *,
    webhook_url: str,
    his_port: int,
    fhir_url: str,
    mllp_listen_port: int = 0,
    secret_env: str = SECRET_ENV,
) -> dict[str, Any]:
    """The hub.yaml the sandbox runs: every route to its twin, secrets by ${ENV}."""
    return {
        "database_url": f"sqlite:///{workdir / 'hub.db'}",
        "api": {"host": "127.0.0.1", "port": 8080},
        # As recommended on two CPUs or more: delivery in a `hub worker` process.
        "worker": {"processes": "auto"},
        "retry_policies": {
            "default": {"initial_delay": 0.5, "max_delay": 30, "max_attempts": 8},
        },
        "destinations": {
            # The twins are on loopback: never through a proxy the environment names.
            "ems-webhook": {
                "type": "http",
                "url": webhook_url,
                "secret": f"${{{secret_env}}}",
                "proxy": "none",
            },
            "his-mllp": {"type": "mllp", "host": "127.0.0.1", "port": his_port},
            "emr-fhir": {"type": "fhir", "base_url": fhir_url, "proxy": "none"},
            "debug-outbox": {"type": "file", "directory": str(workdir / "outbox")},
        },
        "listeners": {
            "monitors": {"type": "mllp", "host": "127.0.0.1", "port": mllp_listen_port},
        },
        "routes": [
            {"name": "all-to-webhook", "destination": "ems-webhook"},
            # ADT and ORU share one key per incident, so results never overtake the
            # registration they belong to.
            {
                "name": "adt-to-his",
                "when": {"types": ADT_EVENTS},
                "mapping": "hl7v2-adt",
                "destination": "his-mllp",
            },
            {
                "name": "oru-to-his",
                "when": {"types": ORU_EVENTS},
                "mapping": "hl7v2-oru",
                "destination": "his-mllp",
            },
            {
                "name": "bundle-to-emr",
                "when": {"types": [*ADT_EVENTS, *ORU_EVENTS, "unit.status", "handover.completed"]},
                "mapping": "fhir-r4-transaction",
                "destination": "emr-fhir",
            },
            {
                "name": "clinical-to-file",
                "when": {"types": ["vitals.recorded", "ecg.acquired", "assessment.updated"]},
                "destination": "debug-outbox",
                "ordering_key": "patient",
            },
        ],
    }


@dataclass
class SandboxPartners:
    """The webhook, HIS (MLLP) and EMR (FHIR) twins on loopback ports."""

    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    webhook: HttpReceiverTwin = field(init=False)
    his: HisTwin = field(init=False)
    fhir: FhirServerTwin = field(init=False)
    _servers: list[ServerThread] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.webhook = HttpReceiverTwin(secret=self.secret)
        self.his = HisTwin(application="HIS", facility="DEMO-HOSPITAL")
        self.fhir = FhirServerTwin()

    def start(self) -> SandboxPartners:
        self._servers = [ServerThread(app).start() for app in (self.webhook.app, self.fhir.app)]
        self.his.start_in_thread()
        return self

    def stop(self) -> None:
        self.his.stop_thread()
        for server in self._servers:
            server.stop()

    @property
    def webhook_url(self) -> str:
        return f"{self._servers[0].url}/hook"

    @property
    def fhir_url(self) -> str:
        return self._servers[1].url

    def config(self, workdir: Path, *, mllp_listen_port: int = 0) -> dict[str, Any]:
        return sandbox_config(
            workdir,
            webhook_url=self.webhook_url,
            his_port=self.his.port,
            fhir_url=self.fhir_url,
            mllp_listen_port=mllp_listen_port,
        )

    def env(self) -> dict[str, str]:
        return {SECRET_ENV: self.secret}

    def summary(self) -> list[str]:
        his = self.his.received()
        acked = sum(1 for m in his if m.answer == "AA")
        return [
            f"webhook twin accepted {len(self.webhook.accepted_ids())} messages",
            f"HIS twin received {len(his)} HL7 messages ({acked} answered AA): "
            + ", ".join(sorted({m.message_type for m in his})),
            f"FHIR twin holds {len(self.fhir.resources('Patient'))} Patient, "
            f"{len(self.fhir.resources('Encounter'))} Encounter, "
            f"{len(self.fhir.resources('Observation'))} Observation resources",
        ]
