"""hub.yaml validated whole into an immutable plan, or every problem reported at once."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
import yaml

from hub.config.plan import ConfigError, Problem, load_plan, plan_from_mapping
from hub.connectors.file import FileSettings
from hub.connectors.http import HttpSettings
from hub.retry import RetryPolicy

GOOD = """
database_url: sqlite:///hub-data/hub.db
clients:
  dispatch-tianjin: {token: "${DISPATCH_TOKEN}", scopes: [ingest], sources: [dispatch-tianjin]}
retry_policies:
  default: {initial_delay: 1, multiplier: 2, max_delay: 300, max_attempts: 10, jitter: 0.2}
  patient: {initial_delay: 5, max_delay: 60, max_attempts: 3}
destinations:
  his-webhook: {type: http, url: "https://his.example/hook", secret: "${HIS_SECRET}"}
  cpc: {type: http, url: "https://cpc.example/hook", retry: patient, max_in_flight: 4}
  debug: {type: file, directory: hub-data/outbox, enabled: false,
          retry: {initial_delay: 0.5, max_delay: 2, max_attempts: 2}}
routes:
  - name: clinical-to-his
    when: {types: ["vitals.recorded", "ecg.*"], match: {source: dispatch-tianjin}}
    destination: his-webhook
    ordering_key: patient
  - name: all-to-cpc
    destination: cpc
  - name: debug
    destination: debug
    ordering_key: field:data.unit_id
"""
ENV = {"DISPATCH_TOKEN": "d-token", "HIS_SECRET": "his-secret"}


def problems_of(raw: Any, env: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        plan_from_mapping(raw, env if env is not None else ENV)
    return info.value.problems


def paths(problems: list[Problem]) -> list[str]:
    return [p.path for p in problems]


def good() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(GOOD)
    return data


def test_a_valid_file_becomes_a_plan(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(GOOD, encoding="utf-8")
    plan = load_plan(path, env=ENV)
    assert plan.source == str(path)
    assert plan.database_url == "sqlite:///hub-data/hub.db"
    assert [r.name for r in plan.routes] == ["clinical-to-his", "all-to-cpc", "debug"]
    his = plan.destinations["his-webhook"]
    assert isinstance(his.settings, HttpSettings)
    assert his.settings.secret is not None
    assert his.settings.secret.get_secret_value() == "his-secret"
    assert his.retry == RetryPolicy(initial_delay=1, max_delay=300, max_attempts=10, jitter=0.2)
    assert (his.max_in_flight, his.enabled) == (16, True)
    cpc = plan.destinations["cpc"]
    assert cpc.retry == RetryPolicy(initial_delay=5, max_delay=60, max_attempts=3)
    assert cpc.max_in_flight == 4
    debug = plan.destinations["debug"]
    assert isinstance(debug.settings, FileSettings)
    assert debug.settings.directory == Path("hub-data/outbox")
    assert debug.retry.max_attempts == 2
    assert debug.enabled is False
    assert plan.spec.clients["dispatch-tianjin"].token.get_secret_value() == "d-token"


@pytest.mark.parametrize(
    ("destination", "in_flight"),
    [
        ({"type": "http", "url": "https://his.example/hook"}, 16),
        ({"type": "mllp", "host": "his.example", "port": 2575}, 16),
        ({"type": "mllp", "host": "his.example", "port": 2575, "connections": 4}, 32),
        (
            {
                "type": "mllp",
                "host": "his.example",
                "port": 2575,
                "connections": 4,
                "max_in_flight": 5,
            },
            5,
        ),
    ],
)
def test_max_in_flight_defaults_to_the_connectors_window(
    destination: dict[str, Any], in_flight: int
) -> None:
    plan = plan_from_mapping({"destinations": {"his": destination}}, {})
    assert plan.destinations["his"].max_in_flight == in_flight


def test_the_plan_is_immutable() -> None:
    plan = plan_from_mapping(good(), ENV)
    with pytest.raises(TypeError):
        plan.destinations["x"] = plan.destinations["cpc"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        plan.database_url = "sqlite://"  # type: ignore[misc]


def test_hub_database_url_from_the_environment_wins() -> None:
    plan = plan_from_mapping(good(), {**ENV, "HUB_DATABASE_URL": "postgresql://db/hub"})
    assert plan.database_url == "postgresql://db/hub"


def test_an_empty_file_is_the_default_plan(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("# nothing configured yet\n", encoding="utf-8")
    plan = load_plan(path, env={})
    assert plan.database_url == "sqlite:///hub-data/hub.db"
    assert (dict(plan.destinations), plan.routes) == ({}, ())
    assert plan.spec.retry_policies == {"default": RetryPolicy()}


def test_every_problem_is_reported_at_once() -> None:
    broken = yaml.safe_load(
        dedent(
            """
            clients:
              ops: {token: "${OPS_TOKEN}", scopes: [read, admin]}
            destinations:
              his: {type: http, url: "not a url"}
              ftp-drop: {type: ftp, host: ftp.example}
              cpc: {type: http, url: "https://cpc.example/", retry: nightly}
              disk: {type: file, directory: out, compress: true}
            routes:
              - {name: one, destination: his}
              - {name: two, destination: nowhere}
              - {name: three, destination: cpc, mapping: hl7-adt-a04}
              - {name: four, destination: his, ordering_key: by-bed}
              - {name: one, destination: cpc}
            """
        )
    )
    found = problems_of(broken, env={})
    assert sorted(paths(found)) == sorted(
        [
            "clients.ops.token",
            "clients.ops.scopes[1]",
            "destinations.his.url",
            "destinations.ftp-drop.type",
            "destinations.cpc.retry",
            "destinations.disk.compress",
            "routes[1].destination",
            "routes[2].mapping",
            "routes[3].ordering_key",
            "routes[4].name",
        ]
    )
    by_path = {p.path: p.message for p in found}
    assert by_path["clients.ops.token"] == "environment variable OPS_TOKEN is not set"
    assert "no connector named 'ftp'" in by_path["destinations.ftp-drop.type"]
    assert "; known: " in by_path["destinations.ftp-drop.type"]
    assert "http" in by_path["destinations.ftp-drop.type"].split("; known: ")[1]
    assert by_path["destinations.cpc.retry"] == "no retry policy 'nightly'; default"
    assert "no destination 'nowhere'" in by_path["routes[1].destination"]
    assert "no mapping named 'hl7-adt-a04'" in by_path["routes[2].mapping"]
    assert "field:<dotted.path>" in by_path["routes[3].ordering_key"]
    assert by_path["routes[4].name"] == "route 'one' is defined twice"


def test_the_error_text_lists_every_problem_with_its_path() -> None:
    raw = good()
    raw["routes"][1]["destination"] = "nowhere"
    raw["destinations"]["cpc"]["url"] = "ftp:/x"
    with pytest.raises(ConfigError) as info:
        plan_from_mapping(raw, ENV, source="site/hub.yaml")
    text = str(info.value)
    assert text.startswith("site/hub.yaml: 2 problem(s)\n")
    assert "\nroutes[1].destination: no destination 'nowhere'" in text
    assert "\ndestinations.cpc.url: " in text


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        (lambda d: d["destinations"]["cpc"].update(type="smtp"), "destinations.cpc.type", "smtp"),
        (
            lambda d: d["destinations"]["cpc"].update(url="mllp://x"),
            "destinations.cpc.url",
            "URL scheme",
        ),
        (
            lambda d: d["destinations"]["cpc"].update(timeout=-1),
            "destinations.cpc.timeout",
            "greater than 0",
        ),
        (lambda d: d["routes"][0].update(mapping="nope"), "routes[0].mapping", "'nope'"),
        (lambda d: d["routes"][2].update(ordering_key="field:"), "routes[2].ordering_key", ""),
        (lambda d: d["routes"][2].update(ordering_key="Patient"), "routes[2].ordering_key", ""),
        (lambda d: d["routes"][1].update(name="All To CPC"), "routes[1].name", "pattern"),
        (lambda d: d["routes"][1].update(destination="his"), "routes[1].destination", "'his'"),
        (lambda d: d["routes"].append(dict(d["routes"][0])), "routes[3].name", "twice"),
        (lambda d: d.update(colour="red"), "colour", "Extra inputs"),
        (lambda d: d.update(version=2), "version", "1"),
        (
            lambda d: d["retry_policies"]["patient"].update(max_delay=1),
            "retry_policies.patient",
            "max_delay must be at least initial_delay",
        ),
        (lambda d: d["routes"][0]["when"].update(typos=["x"]), "routes[0].when.typos", "Extra"),
    ],
)
def test_each_kind_of_problem_names_its_path(change: Any, path: str, words: str) -> None:
    raw = good()
    change(raw)
    found = problems_of(raw)
    assert paths(found) == [path]
    assert words in found[0].message


@pytest.mark.parametrize("key", ["field:data.unit_id", "field:data.samples.0.spo2", "none"])
def test_valid_ordering_keys(key: str) -> None:
    raw = good()
    raw["routes"][0]["ordering_key"] = key
    assert plan_from_mapping(raw, ENV).routes[0].ordering_key == key


def test_unknown_policy_is_reported_even_when_another_section_is_invalid() -> None:
    raw = good()
    raw["api"] = {"port": 70000}
    raw["destinations"]["cpc"]["retry"] = "weekly"
    assert sorted(paths(problems_of(raw))) == ["api.port", "destinations.cpc.retry"]


def test_an_invalid_section_does_not_cause_false_reports() -> None:
    raw = good()
    raw["destinations"] = ["not", "a", "mapping"]
    raw["retry_policies"] = "fast"
    # routes name destinations that cannot be checked now; only the real problems show
    assert sorted(paths(problems_of(raw))) == ["destinations", "retry_policies"]


def test_bad_yaml_is_one_problem_with_the_position(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("routes:\n  - name: a\n    destination: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_plan(path, env={})
    [problem] = info.value.problems
    assert problem.path == ""
    assert problem.message.startswith("not valid YAML")
    assert "line" in problem.message
    assert str(path) in str(info.value)


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_plan(tmp_path / "absent.yaml", env={})
    [problem] = info.value.problems
    assert str(problem) == "(top): cannot read: No such file or directory"


def test_the_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_plan(path, env={})
    assert [p.message for p in info.value.problems] == ["the top level must be a mapping"]


def test_route_options_are_checked_against_the_mappings_own_spec() -> None:
    raw = {
        "destinations": {"his": {"type": "file", "directory": "out"}},
        "routes": [
            {
                "name": "adt",
                "mapping": "hl7v2-adt",
                "destination": "his",
                "options": {"trigger": "A99", "colour": "red"},
            },
            {
                "name": "ok",
                "mapping": "hl7v2-adt",
                "destination": "his",
                "options": {"trigger": "A05"},
            },
        ],
    }
    with pytest.raises(ConfigError) as caught:
        plan_from_mapping(raw, env={})
    paths = sorted(p.path for p in caught.value.problems)
    assert paths == ["routes[0].options.colour", "routes[0].options.trigger"]


@pytest.mark.parametrize(("cpus", "expected"), [(1, 0), (2, 1), (8, 1), (None, 0)])
def test_worker_processes_auto_is_one_where_there_are_two_cpus(
    monkeypatch: pytest.MonkeyPatch, cpus: int | None, expected: int
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    plan = plan_from_mapping({"worker": {"processes": "auto"}}, env={})
    assert plan.spec.worker.process_count() == expected


def test_by_default_the_hub_delivers_in_its_own_process() -> None:
    """ARCHITECTURE.md, principle 8: one process with a SQLite file is the default."""
    assert plan_from_mapping({}, env={}).spec.worker.process_count() == 0


def test_worker_processes_may_be_a_number_and_nothing_else() -> None:
    assert plan_from_mapping({"worker": {"processes": 3}}, env={}).spec.worker.process_count() == 3
    for bad in (-1, 17, "many"):
        assert paths(problems_of({"worker": {"processes": bad}})) == ["worker.processes"]
