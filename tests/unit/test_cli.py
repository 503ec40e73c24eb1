"""The `hub` command, run in-process: check, schema, db upgrade, messages, resend."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from sqlalchemy import inspect, select

from hub.cli import main
from hub.ids import new_id
from hub.model.events import EVENT_TYPES, event_json_schema
from hub.store.records import DeliveryStatus, Finished, IngestJob, NewDelivery, NewEvent
from hub.store.store import Store
from hub.store.tables import audit_log
from hub.testing.rows import delivery_row

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "event-schema.json"

BROKEN = """
destinations:
  his: {type: http, url: "not a url"}
  disk: {type: smtp}
routes:
  - {name: a, destination: his}
  - {name: b, destination: nowhere}
  - {name: a, destination: his, ordering_key: bed}
"""


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """`hub` configures the root logger for its process; give it back after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture(autouse=True)
def _no_hub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_DATABASE_URL", raising=False)
    monkeypatch.delenv("HUB_CONFIG", raising=False)


def write_yaml(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_check_reports_every_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_yaml(tmp_path / "hub.yaml", BROKEN)
    with pytest.raises(SystemExit) as info:
        main(["-c", config, "check"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{config}: 5 problem(s)\n")
    for path in (
        "destinations.his.url: ",
        "destinations.disk.type: no connector named 'smtp'",
        "routes[1].destination: no destination 'nowhere'",
        "routes[2].ordering_key: ",
        "routes[2].name: route 'a' is defined twice",
    ):
        assert f"\n{path}" in err, f"{path!r} missing from:\n{err}"


def test_check_of_bad_yaml_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_yaml(tmp_path / "hub.yaml", "routes: [\n")
    with pytest.raises(SystemExit) as info:
        main(["-c", config, "check"])
    assert info.value.code == 2
    assert "(top): not valid YAML" in capsys.readouterr().err


def test_check_of_a_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_yaml(
        tmp_path / "hub.yaml",
        "destinations: {out: {type: file, directory: out}}\n"
        "routes: [{name: all, destination: out}]\n",
    )
    assert main(["-c", config, "check"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"{config}: valid (1 destinations, 1 routes)",
        "warning: no clients configured: the API accepts unauthenticated calls",
    ]


def test_schema_prints_the_event_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == event_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["discriminator"]["mapping"]) == set(EVENT_TYPES)
    assert len(schema["oneOf"]) == len(EVENT_TYPES)


def test_the_committed_event_schema_is_current() -> None:
    expected = json.dumps(event_json_schema(), indent=2, ensure_ascii=False) + "\n"
    committed = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.exists() else ""
    assert committed == expected, (
        "docs/event-schema.json is stale; regenerate it with `hub schema > docs/event-schema.json`"
    )


def test_db_upgrade_creates_the_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "data" / "hub.db"
    config = write_yaml(tmp_path / "hub.yaml", f"database_url: sqlite:///{db}\n")
    assert main(["-c", config, "db", "upgrade"]) == 0
    assert capsys.readouterr().out == "database at revision head\n"
    store = Store(f"sqlite:///{db}")
    try:
        assert {"inbound_messages", "deliveries", "attempts"} <= set(
            inspect(store.engine).get_table_names()
        )
    finally:
        store.close()


# ---------------------------------------------------------------- messages and resend


def _job(event_id: str, incident: str, received_at: float) -> IngestJob:
    body = {"event_id": event_id, "type": "incident.cancelled", "incident_id": incident}
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    delivery = NewDelivery(new_id(), "all", "canonical-json", "out", f"incident:{incident}")
    event = NewEvent(
        event_id, "incident.cancelled", incident, None, None, "dispatch", received_at,
        body, digest, (delivery,),
    )  # fmt: skip
    return IngestJob(
        new_id(received_at), received_at, "http", "dispatch", "application/json",
        orjson.dumps(body), (event,),
    )  # fmt: skip


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[tuple[str, Store, list[IngestJob]]]:
    """A hub.yaml and its database holding three messages; the first delivery is dead."""
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = write_yaml(tmp_path / "hub.yaml", yaml.safe_dump({"database_url": url}))
    store = Store.open(url, migrate=True)
    start = time.time() - 60
    jobs = [_job(f"e{n}", f"INC-{n % 2}", start + n) for n in range(3)]
    store.ingest(jobs)
    [claimed] = store.claim("w", limit=1, lease_seconds=30)
    store.finish(
        [
            Finished(
                claimed.id, 1, "w", time.time(), 5.0, "permanent", DeliveryStatus.DEAD,
                time.time(), status="HTTP 400", error="refused",
            )
        ]
    )  # fmt: skip
    try:
        yield config, store, jobs
    finally:
        store.close()


def test_messages_list(
    filled: tuple[str, Store, list[IngestJob]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _, jobs = filled
    assert main(["-c", config, "messages", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [j.inbound_id for j in reversed(jobs)]
    assert all(" accepted " in line for line in lines)
    assert lines[0].endswith("incident=INC-0 events=1")

    assert main(["-c", config, "messages", "list", "--limit", "2", "--incident", "INC-0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [jobs[2].inbound_id, jobs[0].inbound_id]

    assert main(["-c", config, "messages", "list", "--limit", "1"]) == 0
    first, more = capsys.readouterr().out.splitlines()
    assert first.split()[0] == jobs[2].inbound_id
    assert more.startswith("more: --cursor ")
    cursor = more.removeprefix("more: --cursor ")
    assert main(["-c", config, "messages", "list", "--limit", "5", "--cursor", cursor]) == 0
    rest = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in rest] == [jobs[1].inbound_id, jobs[0].inbound_id]


def test_messages_list_refuses_a_cursor_it_did_not_hand_out(
    filled: tuple[str, Store, list[IngestJob]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _, _ = filled
    assert main(["-c", config, "messages", "list", "--cursor", "garbage"]) == 2
    assert "invalid cursor 'garbage'" in capsys.readouterr().err


def test_messages_show_is_audited(
    filled: tuple[str, Store, list[IngestJob]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, store, jobs = filled
    monkeypatch.setenv("USER", "alice")
    assert main(["-c", config, "messages", "show", jobs[0].inbound_id]) == 0
    shown: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert shown["id"] == jobs[0].inbound_id
    assert shown["raw_text"] == jobs[0].raw.decode()
    assert [e["event_id"] for e in shown["events"]] == ["e0"]
    [delivery] = shown["deliveries"]
    assert delivery["message_id"] == jobs[0].events[0].deliveries[0].message_id
    assert delivery["status"] == "dead"
    assert [(a["outcome"], a["status"]) for a in delivery["attempt_log"]] == [
        ("permanent", "HTTP 400")
    ]
    with store.engine.connect() as conn:
        audits = [(r.actor, r.action, r.subject) for r in conn.execute(select(audit_log))]
    assert audits == [("cli:alice", "message.read", jobs[0].inbound_id)]

    assert main(["-c", config, "messages", "show", "NOPE"]) == 1
    assert capsys.readouterr().err == "no message NOPE\n"


def test_resend(
    filled: tuple[str, Store, list[IngestJob]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, store, jobs = filled
    dead = store.delivery_by_message_id(jobs[0].events[0].deliveries[0].message_id)
    waiting = store.delivery_by_message_id(jobs[1].events[0].deliveries[0].message_id)
    assert dead is not None and waiting is not None
    code = main(["-c", config, "resend", str(dead["id"]), str(waiting["id"])])
    assert code == 1, "one of the two could not be queued"
    captured = capsys.readouterr()
    assert captured.out == f"delivery {dead['id']}: queued again\n"
    assert captured.err == f"delivery {waiting['id']}: delivery {waiting['id']} is still pending\n"
    after = delivery_row(store, dead["id"])
    assert after is not None
    assert (after["status"], after["attempts"], after["message_id"]) == (
        "pending",
        0,
        dead["message_id"],
    )
