"""The README's examples are real: its hub.yaml validates and its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from hub.cli import build_parser
from hub.config.plan import plan_from_mapping

README = Path(__file__).resolve().parents[3] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_hub_yaml_is_valid() -> None:
    (config,) = [b for b in _blocks("yaml") if "routes:" in b]
    env = {name: "x" for name in re.findall(r"\$\{([A-Z_]+)\}", config)}
    plan = plan_from_mapping(yaml.safe_load(config), env=env, source="README.md")
    assert {d.type for d in plan.destinations.values()} == {"mllp", "fhir", "http"}
    assert {r.mapping for r in plan.routes} >= {"hl7v2-adt", "hl7v2-oru", "fhir-r4-transaction"}
    assert set(plan.listeners) == {"monitors"}


def test_the_readme_names_only_commands_that_exist() -> None:
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"`hub ([a-z]+)", text))
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert choices is not None
    assert named <= set(choices), named - set(choices)


def test_the_readme_has_exactly_two_setup_commands() -> None:
    (setup,) = _blocks("sh")[:1]
    commands = [line.split("#")[0].strip() for line in setup.splitlines() if line.strip()]
    assert commands == ["make sandbox", "make test"]


def test_the_configuration_reference_is_current() -> None:
    from hub.docs import configuration_reference

    committed = (README.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == configuration_reference(), (
        "docs/configuration.md is stale: run `hub docs` and commit the result"
    )


def test_components_registered_at_run_time_stay_out_of_the_reference() -> None:
    from hub.docs import configuration_reference
    from hub.registry import names, register
    from mappings.base import MappingContext, Payload

    @register("mapping", "docs-test-only")
    def _only_here(event: object, ctx: MappingContext) -> Payload:
        return Payload(b"", "text/plain")

    assert "docs-test-only" in names("mapping")
    assert "docs-test-only" not in names("mapping", shipped=True)
    assert "docs-test-only" not in configuration_reference()


def test_the_readme_event_example_is_accepted_by_the_model() -> None:
    from hub.model.events import parse_events

    (example,) = _blocks("json")
    (event,) = parse_events(example)
    assert event.type == "call.received"
    assert event.occurred_at.utcoffset() is not None
