"""The fhir connector against the FHIR server twin on loopback, and the mapping end to end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import orjson
import pytest

from hub.api.app import create_app
from hub.config.plan import plan_from_mapping
from hub.connectors.base import Connector, Outbound, Outcome
from hub.connectors.fhir import (
    FhirConnector,
    FhirSettings,
    summarise_operation_outcome,
    summarise_transaction_response,
)
from hub.runtime import HubRuntime
from hub.testing.conformance import (
    ConformanceTwin,
    UrlConnectorConformance,
    make_outbound,
)
from hub.testing.examples import EXAMPLE_INCIDENT_ID, example_events
from sandbox.fhir_twin import FhirServerTwin
from sandbox.http_receiver import ServerThread

FHIR_JSON = "application/fhir+json"


def tiny_bundle(value: str, text: str = "") -> bytes:
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test", "value": value}],
        "name": [{"text": text or value}],
    }
    return orjson.dumps(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": f"urn:uuid:{value}",
                    "resource": patient,
                    "request": {"method": "PUT", "url": f"Patient?identifier=urn:test|{value}"},
                }
            ],
        }
    )


class FhirTwin:
    """The FHIR server twin on a free loopback port, seen through ConformanceTwin."""

    def __init__(self, **options: Any) -> None:
        self.app = FhirServerTwin(**options)
        self.server = ServerThread(self.app.app).start()
        self.port = self.server.port
        self.url = self.server.url + "/"
        self._stopped = False

    def received(self, message_id: str) -> list[bytes]:
        return self.app.received(message_id)

    def message_ids(self) -> list[str]:
        return self.app.message_ids()

    def fail_transiently(self) -> None:
        self.app.fail(503, count=1_000_000)

    def refuse_permanently(self) -> None:
        self.app.fail(400, count=1_000_000)

    def heal(self) -> None:
        self.app.fail(200, count=0)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.server.stop()

    def restart(self) -> None:
        """The same server state on the same port: connectors must reconnect by themselves."""
        self.server.stop()
        self.server = ServerThread(self.app.app, port=self.port).start()
        self._stopped = False


@pytest.fixture
def fhir_twin() -> Iterator[FhirTwin]:
    twin = FhirTwin(bearer_token=None)
    try:
        yield twin
    finally:
        twin.stop()


def fhir(url: str, **settings: object) -> FhirConnector:
    return FhirConnector("emr", FhirSettings.model_validate({"base_url": url, **settings}))


def outbound(payload: bytes, message_id: str = "MSG-1", attempt: int = 1) -> Outbound:
    return make_outbound(message_id, payload=payload, content_type=FHIR_JSON, attempt=attempt)


def send(connector: Connector, message: Outbound) -> Any:
    async def run() -> Any:
        try:
            return await connector.send(message)
        finally:
            await connector.close()

    return asyncio.run(run())


class TestFhirConformance(UrlConnectorConformance):
    content_type: ClassVar[str] = FHIR_JSON

    def _message(self, message_id: str | None = None, **kwargs: Any) -> Outbound:
        # The suite's payloads are not Bundles: wrap each in a one-entry transaction.
        payload = kwargs.pop("payload", b"sample")
        text = payload.decode()
        key = str(abs(hash(text)))
        return make_outbound(
            message_id, content_type=FHIR_JSON, payload=tiny_bundle(key, text), **kwargs
        )

    @pytest.fixture
    def twin(self, fhir_twin: FhirTwin) -> ConformanceTwin:
        return fhir_twin

    def connector_at(self, url: str) -> Connector:
        return fhir(url, timeout=5)


def test_delivered_keeps_transaction_response_summary(fhir_twin: FhirTwin) -> None:
    result = send(fhir(fhir_twin.url), outbound(tiny_bundle("A1")))
    assert result.outcome is Outcome.DELIVERED
    assert result.status == "HTTP 200"
    assert result.response.startswith("transaction-response (1 entries): 201 Created Patient/")


def test_retried_bundle_does_not_duplicate(fhir_twin: FhirTwin) -> None:
    for attempt in (1, 2, 3):
        result = send(fhir(fhir_twin.url), outbound(tiny_bundle("A1"), attempt=attempt))
        assert result.outcome is Outcome.DELIVERED
    (patient,) = fhir_twin.app.resources("Patient")
    assert patient["meta"]["versionId"] == "3"
    assert "200 OK" in result.response


def test_400_with_operation_outcome_is_permanent_with_diagnostics(fhir_twin: FhirTwin) -> None:
    bad = orjson.dumps({"resourceType": "Bundle", "type": "collection"})
    result = send(fhir(fhir_twin.url), outbound(bad))
    assert result.outcome is Outcome.PERMANENT
    assert result.status == "HTTP 400"
    assert "error/value: Bundle.type must be transaction at Bundle.type" in result.error
    assert result.error_class == "http_4xx"


def test_503_with_retry_after_is_transient(fhir_twin: FhirTwin) -> None:
    fhir_twin.app.fail(503, retry_after=7)
    result = send(fhir(fhir_twin.url), outbound(tiny_bundle("A1")))
    assert result.outcome is Outcome.TRANSIENT
    assert result.retry_after == 7
    assert "transient" in result.error


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(408, "transient"), (429, "transient"), (404, "permanent"), (422, "permanent")],
)
def test_status_classes(fhir_twin: FhirTwin, status: int, outcome: str) -> None:
    fhir_twin.app.fail(status)
    assert send(fhir(fhir_twin.url), outbound(tiny_bundle("A1"))).outcome.value == outcome


def test_conditional_update_with_two_matches_is_412(fhir_twin: FhirTwin) -> None:
    for value in ("X1", "X2"):
        send(fhir(fhir_twin.url), outbound(tiny_bundle(value)))
    # Give the second Patient the first one's identifier too: now two resources match.
    both = orjson.loads(tiny_bundle("X2"))
    both["entry"][0]["resource"]["identifier"].append({"system": "urn:test", "value": "X1"})
    send(fhir(fhir_twin.url), outbound(orjson.dumps(both)))
    result = send(fhir(fhir_twin.url), outbound(tiny_bundle("X1")))
    assert result.outcome is Outcome.PERMANENT
    assert result.status == "HTTP 412"
    assert "multiple-matches" in result.error


def test_bearer_token() -> None:
    twin = FhirTwin(bearer_token="s3cret")
    try:
        refused = send(fhir(twin.url), outbound(tiny_bundle("B1")))
        assert refused.outcome is Outcome.PERMANENT
        assert refused.status == "HTTP 401"
        auth = {"type": "bearer", "token": "s3cret"}
        assert (
            send(fhir(twin.url, auth=auth), outbound(tiny_bundle("B1"))).outcome
            is Outcome.DELIVERED
        )
    finally:
        twin.stop()


def test_oauth2_client_credentials_token_is_cached_and_renewed_after_401() -> None:
    twin = FhirTwin(bearer_token="static-not-used", client_id="hub", client_secret="pw")
    try:
        auth = {
            "type": "oauth2",
            "token_url": twin.server.url + "/token",
            "client_id": "hub",
            "client_secret": "pw",
            "scope": "system/*.write",
        }
        connector = fhir(twin.url, auth=auth)

        async def run() -> list[Outcome]:
            outcomes = []
            try:
                for n in range(3):
                    outcomes.append((await connector.send(outbound(tiny_bundle(f"O{n}")))).outcome)
                twin.app.revoke_tokens()
                outcomes.append((await connector.send(outbound(tiny_bundle("O9")))).outcome)
                outcomes.append((await connector.send(outbound(tiny_bundle("O9")))).outcome)
            finally:
                await connector.close()
            return outcomes

        outcomes = asyncio.run(run())
        assert outcomes == [Outcome.DELIVERED] * 3 + [Outcome.TRANSIENT, Outcome.DELIVERED]
        assert twin.app.token_requests == 2
        wrong = fhir(twin.url, auth={**auth, "client_secret": "nope"})
        result = send(wrong, outbound(tiny_bundle("O1")))
        assert result.outcome is Outcome.PERMANENT
        assert result.error_class == "auth"
    finally:
        twin.stop()


def test_summaries() -> None:
    assert summarise_operation_outcome({"resourceType": "Patient"}) is None
    text = summarise_operation_outcome(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "required",
                    "diagnostics": "no status",
                    "expression": ["Encounter.status"],
                },
                {"severity": "warning", "code": "informational", "details": {"text": "note"}},
            ],
        }
    )
    assert text == "error/required: no status at Encounter.status; warning/informational: note"
    assert summarise_transaction_response({"type": "searchset"}) is None


def test_twin_search_and_read(fhir_twin: FhirTwin) -> None:
    send(fhir(fhir_twin.url), outbound(tiny_bundle("S1")))
    found = httpx.get(
        fhir_twin.server.url + "/Patient", params={"identifier": "urn:test|S1"}
    ).json()
    assert found["total"] == 1
    resource_id = found["entry"][0]["resource"]["id"]
    read = httpx.get(f"{fhir_twin.server.url}/Patient/{resource_id}")
    assert read.json()["identifier"][0]["value"] == "S1"
    assert httpx.get(f"{fhir_twin.server.url}/Patient/nope").status_code == 404


def test_end_to_end_hub_to_fhir_twin(tmp_path: Any, fhir_twin: FhirTwin) -> None:
    plan = plan_from_mapping(
        {
            "database_url": f"sqlite:///{tmp_path / 'hub.db'}",
            "worker": {"poll_interval": 0.05},
            "retry_policies": {"default": {"initial_delay": 0.05, "max_delay": 0.2, "jitter": 0}},
            "destinations": {"emr": {"type": "fhir", "base_url": fhir_twin.url}},
            "routes": [
                {
                    "name": "all-to-emr",
                    "mapping": "fhir-r4-transaction",
                    "destination": "emr",
                    "ordering_key": "incident",
                }
            ],
        },
        env={},
    )
    events = example_events(include_cancellation=False)
    fhir_twin.app.fail(503, count=2, retry_after=0)  # the first bundle is retried
    hub = ServerThread(create_app(HubRuntime(plan)), lifespan=True).start()
    try:
        first = httpx.post(hub.url + "/v1/events", json=events[:9], timeout=10)
        assert first.status_code == 202, first.text
        second = httpx.post(hub.url + "/v1/events", json=events[9:], timeout=10)
        assert second.status_code == 202, second.text
        deadline = time.monotonic() + 20
        while fhir_twin.app.transactions < len(events) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        hub.stop()
    assert fhir_twin.app.transactions == len(events)
    (patient,) = fhir_twin.app.resources("Patient")
    (encounter,) = fhir_twin.app.resources("Encounter")
    assert encounter["status"] == "finished"
    assert encounter["subject"]["reference"] == f"Patient/{patient['id']}"
    assert {
        "system": "https://prehospital-hub.example/id/incident",
        "value": EXAMPLE_INCIDENT_ID,
    } in [{"system": i["system"], "value": i["value"]} for i in encounter["identifier"]]
    assert len(fhir_twin.app.resources("Practitioner")) == 3
