"""Every sandbox scenario is valid input for the hub, so `hub sandbox` plays cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.model.events import parse_events
from sandbox.cli import scenario_files
from sandbox.partners import sandbox_config


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.stem)
def test_scenario_parses(path: Path) -> None:
    events = parse_events(path.read_bytes())
    assert len(events) >= 5
    assert len({e.incident_id for e in events}) == 1
    assert len({e.event_id for e in events}) == len(events)


def test_scenarios_exist() -> None:
    assert [p.stem for p in scenario_files()], "sandbox/scenarios holds no scenario"


def test_sandbox_config_is_valid(tmp_path: Path) -> None:
    from hub.config.plan import plan_from_mapping

    config = sandbox_config(
        tmp_path,
        webhook_url="http://127.0.0.1:9/hook",
        his_port=9,
        fhir_url="http://127.0.0.1:9",
        secret_env="SANDBOX_SECRET",
    )
    plan = plan_from_mapping(config, env={"SANDBOX_SECRET": "s"})
    assert set(plan.destinations) == {"ems-webhook", "his-mllp", "emr-fhir", "debug-outbox"}
    assert [r.name for r in plan.routes] == [
        "all-to-webhook",
        "adt-to-his",
        "oru-to-his",
        "bundle-to-emr",
        "clinical-to-file",
    ]
    assert set(plan.listeners) == {"monitors"}
