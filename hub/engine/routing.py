"""Routes compiled from the plan: which deliveries an event causes, decided at ingest."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hub.config.plan import Plan
from hub.config.spec import RouteSpec
from hub.ids import new_id
from hub.store.records import NewDelivery

__all__ = ["CompiledRoute", "Router", "get_path"]

_MISSING = object()


def get_path(document: Mapping[str, Any], path: str) -> Any:
    """Value at a dotted path (``data.patient.sex``; list items by index), or _MISSING."""
    node: Any = document
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part, _MISSING)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    spec: RouteSpec
    accepts: Callable[[Mapping[str, Any]], bool]

    def ordering_key(self, event: Mapping[str, Any], message_id: str) -> str:
        """The queue a delivery joins; deliveries sharing one go strictly in order."""
        kind = self.spec.ordering_key
        if kind == "incident":
            return f"incident:{event['incident_id']}"
        if kind == "patient":
            ref = event.get("patient_ref")
            return f"patient:{ref}" if ref else f"incident:{event['incident_id']}"
        if kind == "none":
            return f"message:{message_id}"
        value = get_path(event, kind.removeprefix("field:"))
        return f"{kind}={'' if value is _MISSING else value}"


def _compile(spec: RouteSpec) -> CompiledRoute:
    patterns = tuple(spec.when.types)
    exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
    globs = tuple(p for p in patterns if p not in exact)
    matches = tuple(
        (path, frozenset(map(_key, v if isinstance(v, list) else [v])))
        for path, v in spec.when.match.items()
    )
    exists = tuple(spec.when.exists)

    def accepts(event: Mapping[str, Any]) -> bool:
        etype = event["type"]
        if etype not in exact and not any(fnmatch.fnmatchcase(etype, g) for g in globs):
            return False
        for path, allowed in matches:
            value = get_path(event, path)
            if value is _MISSING or not _hashable_in(value, allowed):
                return False
        return all(get_path(event, path) is not _MISSING for path in exists)

    return CompiledRoute(spec, accepts)


def _key(value: Any) -> tuple[str, Any]:
    """Comparison key of a filter or event value: JSON booleans never equal numbers
    (Python's ``True == 1`` does), while 1 and 1.0 are the same JSON number."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    return (type(value).__name__, value)


def _hashable_in(value: Any, allowed: frozenset[Any]) -> bool:
    try:
        return _key(value) in allowed
    except TypeError:  # a list or mapping never equals a scalar filter value
        return False


class Router:
    """Fans one event out to the deliveries of every route that accepts it."""

    def __init__(self, plan: Plan) -> None:
        self.routes: Sequence[CompiledRoute] = tuple(_compile(r) for r in plan.routes)
        self._enabled = {n for n, d in plan.destinations.items() if d.enabled}

    def fan_out(self, event: Mapping[str, Any], now: float) -> tuple[NewDelivery, ...]:
        out = []
        for route in self.routes:
            spec = route.spec
            if spec.destination not in self._enabled or not route.accepts(event):
                continue
            message_id = new_id(now)
            out.append(
                NewDelivery(
                    message_id=message_id,
                    route=spec.name,
                    mapping=spec.mapping,
                    destination=spec.destination,
                    ordering_key=route.ordering_key(event, message_id),
                )
            )
        return tuple(out)
