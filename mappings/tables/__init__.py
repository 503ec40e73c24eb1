"""Code tables as data: the ConceptMaps that mappings translate codes with.

Each ``<name>.json`` file in this folder holds ``{"description": ..., "map": {from: to}}``;
``vital_signs.csv`` holds one row per vital-sign item and yields the tables
``vital_loinc``, ``vital_ucum``, ``vital_display`` and ``vital_ws363`` (empty cells are
left out). The files are read once, at import: mappings stay free of I/O at call time.

A destination changes entries without code through its route options::

    options: {code_overrides: {sex_fhir_gender: {"9": "other"}}}

:meth:`CodeTables.with_overrides` layers those over the built-in tables.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from mappings.base import MappingError

__all__ = ["BUILTIN_TABLES", "CodeTables", "load_tables"]

_HERE = Path(__file__).parent
T = TypeVar("T")
_VITAL_COLUMNS = ("loinc", "ucum", "display", "ws363")


def load_tables(directory: Path = _HERE) -> dict[str, dict[str, str]]:
    """Every table in directory, by name; raises ValueError on a malformed file."""
    tables: dict[str, dict[str, str]] = {}
    for path in sorted(directory.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        entries = document.get("map") if isinstance(document, dict) else None
        if not isinstance(entries, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in entries.items()
        ):
            raise ValueError(f"{path.name}: expected {{'map': {{str: str}}}}")
        tables[path.stem] = dict(entries)
    vitals = directory / "vital_signs.csv"
    if vitals.exists():
        with vitals.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        for column in _VITAL_COLUMNS:
            tables[f"vital_{column}"] = {row["field"]: row[column] for row in rows if row[column]}
    return tables


class CodeTables:
    """Read-only code tables, possibly with a destination's overrides on top."""

    def __init__(self, tables: Mapping[str, Mapping[str, str]]) -> None:
        self._tables = MappingProxyType({name: dict(t) for name, t in tables.items()})
        self._derived: dict[Hashable, Any] = {}

    def derived(self, key: Hashable, make: Callable[[], T]) -> T:
        """What ``make`` builds from these tables, built once per ``key``: tables never
        change, so a mapping may keep, say, its segments' coded fields here rather than
        translate the same codes on every message."""
        try:
            value: T = self._derived[key]
        except KeyError:
            value = self._derived.setdefault(key, make())
        return value

    @property
    def names(self) -> list[str]:
        return sorted(self._tables)

    def table(self, name: str) -> Mapping[str, str]:
        """One whole table; raises KeyError for an unknown name."""
        return MappingProxyType(self._tables[name])

    def get(self, name: str, code: str, default: str | None = None) -> str | None:
        """The translation of code in table name, or default when it has none."""
        return self._tables[name].get(code, default)

    def require(self, name: str, code: str) -> str:
        """The translation of code; a code the table lacks is a MappingError."""
        value = self._tables[name].get(code)
        if value is None:
            raise MappingError(f"code {code!r} has no entry in code table {name!r}")
        return value

    def with_overrides(self, overrides: Any) -> CodeTables:
        """These tables with ``{table: {from: to}}`` layered on; bad overrides are errors.

        Called once per mapping call with the route's ``code_overrides``; an override
        naming an unknown table is refused so a typo in hub.yaml is not ignored. The
        layered tables are kept per overrides (a route's are the same on every call), so
        what a mapping derives from them (:meth:`derived`) is kept too.
        """
        if not overrides:
            return self
        if not isinstance(overrides, Mapping):
            raise MappingError("code_overrides must map table names to {from: to} mappings")
        try:
            key = ("with_overrides", json.dumps(overrides, sort_keys=True, default=str))
        except (TypeError, ValueError):
            return self._layered(overrides)  # not JSON (keys of mixed types): not kept
        return self.derived(key, lambda: self._layered(overrides))

    def _layered(self, overrides: Mapping[Any, Any]) -> CodeTables:
        merged = {name: dict(entries) for name, entries in self._tables.items()}
        for name, entries in overrides.items():
            if name not in merged:
                known = ", ".join(sorted(merged))
                raise MappingError(f"code_overrides: no code table {name!r}; known: {known}")
            if not isinstance(entries, Mapping):
                raise MappingError(f"code_overrides.{name} must be a mapping")
            merged[name].update({str(k): str(v) for k, v in entries.items()})
        return CodeTables(merged)


BUILTIN_TABLES = CodeTables(load_tables())
"""The tables shipped in this folder."""
