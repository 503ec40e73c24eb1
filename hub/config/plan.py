"""Load hub.yaml and validate all of it into an immutable plan, or report every problem.

Nothing is applied unless the whole file is valid; each problem names its path
(``routes[2].destination``) so an operator can fix them all in one pass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import ValidationError

from hub.config.env import substitute
from hub.config.spec import DestinationSpec, HubSpec, RouteSpec
from hub.connectors.base import ConnectorSettings
from hub.registry import RegistryError, lookup
from hub.retry import RetryPolicy

__all__ = ["ConfigError", "Destination", "Plan", "Problem", "load_plan", "plan_from_mapping"]

_COMMON_DESTINATION_KEYS = frozenset(DestinationSpec.model_fields)


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '(top)'}: {self.message}"


class ConfigError(ValueError):
    def __init__(self, problems: list[Problem], source: str = "hub.yaml") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(map(str, problems)))


@dataclass(frozen=True, slots=True)
class Destination:
    name: str
    type: str
    settings: ConnectorSettings
    retry: RetryPolicy
    max_in_flight: int
    enabled: bool


@dataclass(frozen=True, slots=True)
class Plan:
    spec: HubSpec
    database_url: str
    destinations: Mapping[str, Destination]
    routes: tuple[RouteSpec, ...]
    source: str


def load_plan(path: str | Path, env: Mapping[str, str] | None = None) -> Plan:
    """Read a hub.yaml file; raises ConfigError listing every problem found."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot read: {exc.strerror}")], str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem("", f"not valid YAML: {exc}")], str(path)) from None
    return plan_from_mapping(raw if raw is not None else {}, env, str(path))


def plan_from_mapping(
    raw: Any, env: Mapping[str, str] | None = None, source: str = "hub.yaml"
) -> Plan:
    if not isinstance(raw, dict):
        raise ConfigError([Problem("", "the top level must be a mapping")], source)
    env = os.environ if env is None else env
    missing: list[tuple[str, str]] = []
    data = substitute(raw, env, missing=missing)
    problems = [Problem(p, f"environment variable {name} is not set") for p, name in missing]
    try:
        spec = HubSpec.model_validate(data)
    except ValidationError as exc:
        problems.extend(Problem(_loc(err["loc"]), err["msg"]) for err in exc.errors())
        raise ConfigError(problems, source) from None

    destinations = {}
    for name, dest in spec.destinations.items():
        built = _destination(name, dest, spec, problems)
        if built is not None:
            destinations[name] = built
    for i, route in enumerate(spec.routes):
        _check_route(i, route, spec, problems)
    names = [r.name for r in spec.routes]
    for i, name in enumerate(names):
        if name in names[:i]:
            problems.append(Problem(f"routes[{i}].name", f"route {name!r} is defined twice"))
    if problems:
        raise ConfigError(problems, source)
    url = env.get("HUB_DATABASE_URL") or spec.database_url
    return Plan(spec, url, MappingProxyType(destinations), tuple(spec.routes), source)


def _destination(
    name: str, dest: DestinationSpec, spec: HubSpec, problems: list[Problem]
) -> Destination | None:
    path = f"destinations.{name}"
    if isinstance(dest.retry, str):
        retry = spec.retry_policies.get(dest.retry)
        if retry is None:
            known = ", ".join(sorted(spec.retry_policies)) or "none"
            problems.append(Problem(f"{path}.retry", f"no retry policy {dest.retry!r}; {known}"))
    else:
        retry = dest.retry
    try:
        connector = lookup("connector", dest.type)
    except RegistryError as exc:
        problems.append(Problem(f"{path}.type", str(exc)))
        return None
    own = {k: v for k, v in (dest.model_extra or {}).items() if k not in _COMMON_DESTINATION_KEYS}
    try:
        settings = connector.settings_model.model_validate(own)
    except ValidationError as exc:
        problems.extend(Problem(_loc((path, *err["loc"])), err["msg"]) for err in exc.errors())
        return None
    if retry is None:
        return None
    return Destination(name, dest.type, settings, retry, dest.max_in_flight, dest.enabled)


def _check_route(i: int, route: RouteSpec, spec: HubSpec, problems: list[Problem]) -> None:
    if route.destination not in spec.destinations:
        known = ", ".join(sorted(spec.destinations)) or "none"
        problems.append(
            Problem(f"routes[{i}].destination", f"no destination {route.destination!r}; {known}")
        )
    try:
        lookup("mapping", route.mapping)
    except RegistryError as exc:
        problems.append(Problem(f"routes[{i}].mapping", str(exc)))


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
