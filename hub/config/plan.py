"""Load hub.yaml and validate all of it into an immutable plan, or report every problem.

Nothing is applied unless the whole file is valid; each problem names its path
(``routes[2].destination``) so an operator can fix them all in one pass.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from hub.config.env import substitute
from hub.config.spec import DestinationSpec, HubSpec, ListenerSpec, RouteSpec
from hub.connectors.base import ConnectorSettings
from hub.registry import RegistryError, lookup
from hub.retry import RetryPolicy

__all__ = [
    "ConfigError",
    "Destination",
    "ListenerPlan",
    "Plan",
    "Problem",
    "load_plan",
    "plan_from_mapping",
]

_COMMON_DESTINATION_KEYS = frozenset(DestinationSpec.model_fields)
T = TypeVar("T")


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
class ListenerPlan:
    name: str
    type: str
    settings: BaseModel  # the listener's own settings model (hub.listeners.ListenerSettings)
    enabled: bool


@dataclass(frozen=True, slots=True)
class Plan:
    spec: HubSpec
    database_url: str
    destinations: Mapping[str, Destination]
    routes: tuple[RouteSpec, ...]
    source: str
    listeners: Mapping[str, ListenerPlan] = field(default_factory=lambda: MappingProxyType({}))


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
        spec: HubSpec | None = HubSpec.model_validate(data)
    except ValidationError as exc:
        spec = None
        problems.extend(Problem(_loc(err["loc"]), err["msg"]) for err in exc.errors())
    # The cross-reference checks run on every part that is valid on its own, even when
    # another part is not, so one pass reports every problem of the file.
    parts = _Parts.of(spec) if spec is not None else _Parts.salvage(data)

    destinations = {}
    for name, dest in parts.destinations.items():
        built = _destination(name, dest, parts.policies, problems)
        if built is not None:
            destinations[name] = built
    for i, route in parts.routes:
        _check_route(i, route, parts.destination_names, problems)
    seen: set[str] = set()
    for i, name in parts.route_names:
        if name in seen:
            problems.append(Problem(f"routes[{i}].name", f"route {name!r} is defined twice"))
        seen.add(name)
    listeners = {}
    for name, listener in _listener_specs(spec, data).items():
        built_listener = _listener(name, listener, problems)
        if built_listener is not None:
            listeners[name] = built_listener
    if problems or spec is None:
        raise ConfigError(problems, source)
    url = env.get("HUB_DATABASE_URL") or spec.database_url
    return Plan(
        spec,
        url,
        MappingProxyType(destinations),
        tuple(spec.routes),
        source,
        MappingProxyType(listeners),
    )


_LISTENER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_LISTENER: TypeAdapter[ListenerSpec] = TypeAdapter(ListenerSpec)
_COMMON_LISTENER_KEYS = frozenset(ListenerSpec.model_fields)


def _listener_specs(spec: HubSpec | None, data: Any) -> dict[str, ListenerSpec]:
    if spec is not None:
        return dict(spec.listeners)
    raw = data.get("listeners") if isinstance(data, dict) else None
    if not isinstance(raw, dict):
        return {}
    found = {str(k): _valid(_LISTENER, v) for k, v in raw.items()}
    return {k: v for k, v in found.items() if v is not None}


def _listener(name: str, spec: ListenerSpec, problems: list[Problem]) -> ListenerPlan | None:
    path = f"listeners.{name}"
    if not _LISTENER_NAME.match(name):
        problems.append(
            Problem(
                path, "a listener name is lower-case letters, digits, - and _ (it names events)"
            )
        )
    try:
        listener = lookup("listener", spec.type)
    except RegistryError as exc:
        problems.append(Problem(f"{path}.type", str(exc)))
        return None
    own = {k: v for k, v in (spec.model_extra or {}).items() if k not in _COMMON_LISTENER_KEYS}
    try:
        settings = listener.settings_model.model_validate(own)
    except ValidationError as exc:
        problems.extend(Problem(_loc((path, *err["loc"])), err["msg"]) for err in exc.errors())
        return None
    return ListenerPlan(name, spec.type, settings, spec.enabled)


@dataclass(frozen=True, slots=True)
class _Parts:
    """The sections of a spec that validated; None where a whole section is unusable."""

    policies: Mapping[str, RetryPolicy] | None
    destinations: Mapping[str, DestinationSpec]
    destination_names: frozenset[str] | None
    routes: tuple[tuple[int, RouteSpec], ...]
    route_names: tuple[tuple[int, str], ...]

    @classmethod
    def of(cls, spec: HubSpec) -> _Parts:
        return cls(
            spec.retry_policies,
            spec.destinations,
            frozenset(spec.destinations),
            tuple(enumerate(spec.routes)),
            tuple((i, r.name) for i, r in enumerate(spec.routes)),
        )

    @classmethod
    def salvage(cls, data: dict[str, Any]) -> _Parts:
        """What can still be checked in a spec that failed validation (already reported)."""
        field = HubSpec.model_fields["retry_policies"]
        raw_policies = data.get("retry_policies", field.get_default(call_default_factory=True))
        policies = _valid(_POLICIES, raw_policies)
        raw_dests = data.get("destinations", {})
        dests: dict[str, DestinationSpec] = {}
        names: frozenset[str] | None = None
        if isinstance(raw_dests, dict):
            names = frozenset(str(k) for k in raw_dests)
            for name, value in raw_dests.items():
                dest = _valid(_DESTINATION, value)
                if dest is not None:
                    dests[str(name)] = dest
        raw_routes = data.get("routes", [])
        routes: list[tuple[int, RouteSpec]] = []
        route_names: list[tuple[int, str]] = []
        if isinstance(raw_routes, list):
            for i, value in enumerate(raw_routes):
                route = _valid(_ROUTE, value)
                if route is not None:
                    routes.append((i, route))
                if isinstance(value, dict) and isinstance(value.get("name"), str):
                    route_names.append((i, value["name"]))
        return cls(policies, dests, names, tuple(routes), tuple(route_names))


_POLICIES: TypeAdapter[dict[str, RetryPolicy]] = TypeAdapter(dict[str, RetryPolicy])
_DESTINATION: TypeAdapter[DestinationSpec] = TypeAdapter(DestinationSpec)
_ROUTE: TypeAdapter[RouteSpec] = TypeAdapter(RouteSpec)


def _valid(adapter: TypeAdapter[T], value: Any) -> T | None:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _destination(
    name: str,
    dest: DestinationSpec,
    policies: Mapping[str, RetryPolicy] | None,
    problems: list[Problem],
) -> Destination | None:
    path = f"destinations.{name}"
    retry: RetryPolicy | None
    if isinstance(dest.retry, str):
        retry = None if policies is None else policies.get(dest.retry)
        if retry is None and policies is not None:
            known = ", ".join(sorted(policies)) or "none"
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
    in_flight = dest.max_in_flight
    if in_flight is None:
        in_flight = connector.default_in_flight(settings)
    return Destination(name, dest.type, settings, retry, in_flight, dest.enabled)


def _check_route(
    i: int, route: RouteSpec, destinations: frozenset[str] | None, problems: list[Problem]
) -> None:
    if destinations is not None and route.destination not in destinations:
        known = ", ".join(sorted(destinations)) or "none"
        problems.append(
            Problem(f"routes[{i}].destination", f"no destination {route.destination!r}; {known}")
        )
    try:
        mapping = lookup("mapping", route.mapping)
    except RegistryError as exc:
        problems.append(Problem(f"routes[{i}].mapping", str(exc)))
        return
    options_model = getattr(mapping, "options_model", None)
    if options_model is not None:
        try:
            options_model.model_validate(route.options)
        except ValidationError as exc:
            problems.extend(
                Problem(_loc((f"routes[{i}]", "options", *err["loc"])), err["msg"])
                for err in exc.errors()
            )


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
