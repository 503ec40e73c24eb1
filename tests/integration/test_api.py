"""The API contract over real sockets: 202/replay/409/422/413, auth and scopes, the
message browser, health, readiness and metrics."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from hubkit import Hub, Webhook, cancelled, hub_config, wait_for

DISPATCH, OPS, AUDITOR = "dispatch-token-1", "ops-token-1", "auditor-token-1"
CLIENTS = {
    "dispatch-tianjin": {"token": DISPATCH, "scopes": ["ingest"], "sources": ["dispatch-tianjin"]},
    "ops": {"token": OPS, "scopes": ["read", "operate"]},
    "auditor": {"token": AUDITOR, "scopes": ["read"]},
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(hub: Hub, body: Any, token: str | None = None) -> httpx.Response:
    headers = {"content-type": "application/json", **(bearer(token) if token else {})}
    return hub.client.post("/v1/events", content=orjson.dumps(body), headers=headers)


def test_ingest_answers(database_url: str, start_hub: Any) -> None:
    hub: Hub = start_hub(hub_config(database_url, api={"max_body_bytes": 4000}))

    # 202, and a replay answers the same without creating anything
    first = post(hub, [cancelled("e1"), cancelled("e2", "INC-2")])
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    answer = first.json()
    assert [a["event_id"] for a in answer["accepted"]] == ["e1", "e2"]
    assert answer["accepted"][0]["deliveries"] == []  # no routes configured
    replay = post(hub, [cancelled("e1"), cancelled("e2", "INC-2")])
    assert (replay.status_code, replay.headers["idempotent-replayed"]) == (202, "true")
    assert replay.json() == answer
    partly = post(hub, {"events": [cancelled("e1"), cancelled("e3")]})
    assert partly.status_code == 202
    assert "idempotent-replayed" not in partly.headers

    # 409: the same event id with another body
    conflict = post(hub, cancelled("e1", reason="changed"))
    assert conflict.status_code == 409
    body = conflict.json()
    assert body["error"] == "conflict"
    assert body["errors"] == [
        {
            "path": "event_id",
            "reason": "event e1 was already accepted with a different body",
            "type": "conflict",
        }
    ]

    # 422 names each field; the raw body is kept as rejected
    broken = cancelled("e4")
    del broken["data"]["reason"]
    raw = orjson.dumps([cancelled("e5"), broken])
    invalid = hub.client.post(
        "/v1/events", content=raw, headers={"content-type": "application/json"}
    )
    assert invalid.status_code == 422
    problem = invalid.json()
    assert problem["error"] == "invalid"
    assert [(e["path"], e["type"]) for e in problem["errors"]] == [
        ("events[1].data.reason", "missing")
    ]
    single = cancelled("e6")
    single["occurred_at"] = "2026-11-25T08:00:00"  # no timezone
    assert post(hub, single).json()["errors"][0]["path"] == "occurred_at"
    assert post(hub, {"type": "unit.teleported"}).json()["errors"][0]["path"] == "type"
    not_json = hub.client.post("/v1/events", content=b"{not json")
    assert (not_json.status_code, not_json.json()["errors"][0]["path"]) == (422, "")

    too_big = post(hub, cancelled("e7", reason="x" * 5000))
    assert too_big.status_code == 413

    # the browser lists each rejected body with its reasons and keeps its bytes
    listed = hub.client.get("/v1/messages", params={"status": "rejected"}).json()["items"]
    by_id = {m["id"]: m for m in listed}
    assert problem["inbound_id"] in by_id
    assert by_id[problem["inbound_id"]]["error"] == problem["errors"]
    assert body["inbound_id"] in by_id
    detail = hub.message(problem["inbound_id"])
    assert (detail["status"], detail["raw_text"]) == ("rejected", raw.decode())
    assert detail["events"] == [] and detail["deliveries"] == []
    accepted = hub.client.get("/v1/messages", params={"status": "accepted"}).json()["items"]
    assert len(accepted) == 2  # e1+e2 and e3; replays create nothing


def test_message_browser_pages_and_filters(database_url: str, start_hub: Any) -> None:
    hub: Hub = start_hub(hub_config(database_url))
    ids = [post(hub, cancelled(f"e{n}", f"INC-{n % 2}")).json() for n in range(7)]
    inbound = [a["accepted"][0]["inbound_id"] for a in ids]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = hub.client.get("/v1/messages", params=params).json()
        seen.extend(m["id"] for m in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(inbound))
    odd = hub.client.get("/v1/messages", params={"incident_id": "INC-1"}).json()["items"]
    assert [m["id"] for m in odd] == [inbound[5], inbound[3], inbound[1]]
    assert odd[0]["received_at"].endswith("+00:00")
    naive = hub.client.get("/v1/messages", params={"since": "2026-11-25T08:00:00"})
    assert naive.status_code == 422
    bad_status = hub.client.get("/v1/messages", params={"status": "lost"})
    assert bad_status.status_code == 422
    assert hub.client.get("/v1/messages/NOPE").status_code == 404
    garbage = hub.client.get("/v1/messages", params={"cursor": "garbage"})
    assert (garbage.status_code, garbage.json()["detail"]) == (422, "invalid cursor 'garbage'")


def test_clients_scopes_and_sources(database_url: str, start_hub: Any) -> None:
    hub: Hub = start_hub(hub_config(database_url, clients=CLIENTS))

    missing = post(hub, cancelled("e1"))
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert post(hub, cancelled("e1"), token="guess").status_code == 401
    basic = hub.client.post("/v1/events", headers={"Authorization": "Basic b3BzOm9wcw=="})
    assert basic.status_code == 401

    wrong_scope = post(hub, cancelled("e1"), token=OPS)
    assert wrong_scope.status_code == 403
    assert "ingest" in wrong_scope.json()["detail"]
    assert hub.client.get("/v1/messages", headers=bearer(DISPATCH)).status_code == 403
    assert hub.client.get("/v1/messages").status_code == 401
    resend = hub.client.post("/v1/deliveries/1/resend", headers=bearer(AUDITOR))
    assert resend.status_code == 403

    # a client may speak only for its own sources; the body is kept as rejected
    raw = orjson.dumps(cancelled("e2", source="dispatch-beijing"))
    foreign = hub.client.post(
        "/v1/events", content=raw, headers={**bearer(DISPATCH), "content-type": "application/json"}
    )
    assert foreign.status_code == 403
    refused = foreign.json()
    assert refused["error"] == "forbidden"
    assert [(e["path"], e["type"]) for e in refused["errors"]] == [("source", "forbidden")]
    ok = post(hub, cancelled("e3"), token=DISPATCH)
    assert ok.status_code == 202, ok.text

    rejected = hub.client.get(
        "/v1/messages", params={"status": "rejected"}, headers=bearer(AUDITOR)
    ).json()["items"]
    assert [m["id"] for m in rejected] == [refused["inbound_id"]]
    assert rejected[0]["source"] == "dispatch-tianjin", "recorded as the authenticated client"
    detail = hub.message(refused["inbound_id"], token=AUDITOR)
    assert detail["raw_text"] == raw.decode()
    assert detail["error"] == refused["errors"]

    # probes are for load balancers and need no token
    assert hub.client.get("/healthz").json() == {"status": "ok"}
    assert hub.client.get("/readyz").json() == {"status": "ready"}
    assert hub.client.get("/metrics").status_code == 200


def test_metrics_show_queue_depth_and_attempts(
    database_url: str, webhook: Webhook, start_hub: Any
) -> None:
    webhook.twin.set_behaviour(always_status=503)
    config = hub_config(database_url, webhook.url)
    config["retry_policies"]["default"] = {"initial_delay": 60, "max_delay": 60, "jitter": 0}
    hub: Hub = start_hub(config)
    for n in range(3):
        assert post(hub, cancelled(f"e{n}", f"INC-{n}")).status_code == 202

    def scraped() -> str | None:
        text = hub.client.get("/metrics").text
        wanted = 'hub_delivery_attempts_total{destination="partner",result="failed"} 3.0'
        return text if wanted in text else None

    text = wait_for("three failed attempts in /metrics", scraped)
    assert 'hub_queue_depth{destination="partner",state="pending"} 3.0' in text
    assert 'hub_queue_depth{destination="partner",state="in_flight"} 0.0' in text
    assert 'hub_events_received_total{type="incident.cancelled"} 3.0' in text
    assert "hub_queue_oldest_age_seconds" in text
    assert hub.client.get("/readyz").json() == {"status": "ready"}
