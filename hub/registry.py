"""Component registry: one line in a component's own module makes it known to the engine.

Connectors, mappings and adapters register themselves with :func:`register`; plugins
shipped in other distributions are found through the ``hub.<kind>`` entry-point groups,
so no central list has to learn about a new component.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

__all__ = ["RegistryError", "load_builtin", "lookup", "names", "register"]

T = TypeVar("T")

_KINDS = ("connector", "mapping", "adapter", "listener")
_registry: dict[str, dict[str, Any]] = {kind: {} for kind in _KINDS}
_plugins: dict[str, set[str]] = {kind: set() for kind in _KINDS}  # came by entry point
_loaded = False

# Modules whose import registers the built-in components.
_BUILTIN_MODULES = (
    "hub.connectors.http",
    "hub.connectors.file",
    "hub.connectors.mllp",
    "hub.listeners.mllp",
    "mappings.canonical_json",
    "mappings.fhir",
    "mappings.hl7v2",
    "hub.connectors.fhir",
)


class RegistryError(LookupError):
    """A component kind or name that nothing registered."""


def register(kind: str, name: str) -> Callable[[T], T]:
    """Decorator: record ``obj`` as component ``name`` of ``kind``; a second name clash fails."""
    if kind not in _registry:
        raise RegistryError(f"unknown component kind {kind!r}; kinds are {', '.join(_KINDS)}")

    def decorate(obj: T) -> T:
        existing = _registry[kind].get(name)
        if existing is not None and existing is not obj:
            raise RegistryError(f"{kind} {name!r} is registered twice")
        _registry[kind][name] = obj
        return obj

    return decorate


def load_builtin() -> None:
    """Import built-in components and entry-point plugins once; call before any lookup."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # set first: a component that looks another up while importing
    try:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        for kind in _KINDS:
            for ep in entry_points(group=f"hub.{kind}s"):
                register(kind, ep.name)(ep.load())
                _plugins[kind].add(ep.name)
    except BaseException:
        _loaded = False  # a failed load must fail again, not leave a half-filled registry
        raise


def lookup(kind: str, name: str) -> Any:
    """The component registered as ``name``; raises RegistryError listing what exists."""
    load_builtin()
    try:
        return _registry[kind][name]
    except KeyError:
        known = ", ".join(sorted(_registry.get(kind, {}))) or "none"
        raise RegistryError(f"no {kind} named {name!r}; known: {known}") from None


def names(kind: str, *, shipped: bool = False) -> list[str]:
    """Registered names of one kind, sorted.

    ``shipped``: only built-in components and installed plugins, not ones registered at
    run time by other code (tests, scripts), e.g. for generated documentation.
    """
    load_builtin()
    found = _registry[kind]
    if not shipped:
        return sorted(found)
    roots = tuple(m.rsplit(".", 1)[0] + "." for m in _BUILTIN_MODULES) + _BUILTIN_MODULES
    return sorted(
        name
        for name, obj in found.items()
        if name in _plugins[kind] or getattr(obj, "__module__", "").startswith(roots)
    )
