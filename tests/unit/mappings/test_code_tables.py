"""CodeTables: overrides layered per route, and values derived from tables kept with them."""

from __future__ import annotations

import pytest

from mappings.base import MappingError
from mappings.tables import BUILTIN_TABLES


def test_the_same_overrides_give_the_same_tables_and_others_their_own() -> None:
    first = BUILTIN_TABLES.with_overrides({"sex_hl7v2": {"1": "A"}})
    again = BUILTIN_TABLES.with_overrides({"sex_hl7v2": {"1": "A"}})
    other = BUILTIN_TABLES.with_overrides({"sex_hl7v2": {"1": "B"}})
    assert first is again
    assert first.require("sex_hl7v2", "1") == "A"
    assert other.require("sex_hl7v2", "1") == "B"
    assert BUILTIN_TABLES.require("sex_hl7v2", "1") == "M"
    assert BUILTIN_TABLES.with_overrides({}) is BUILTIN_TABLES


def test_a_bad_override_fails_every_time() -> None:
    for _ in range(2):
        with pytest.raises(MappingError, match="no code table 'sex_typo'"):
            BUILTIN_TABLES.with_overrides({"sex_typo": {"1": "A"}})
        with pytest.raises(MappingError, match="must be a mapping"):
            BUILTIN_TABLES.with_overrides({"sex_hl7v2": ["1"]})


def test_derived_values_are_made_once_per_tables_and_key() -> None:
    tables = BUILTIN_TABLES.with_overrides({"sex_hl7v2": {"2": "W"}})
    made: list[str] = []

    def make() -> list[str]:
        made.append("x")
        return [tables.require("sex_hl7v2", "2")]

    assert tables.derived("test-key", make) == ["W"]
    assert tables.derived("test-key", make) is tables.derived("test-key", make)
    assert made == ["x"]
    assert tables.derived("other-key", list) == []
    assert BUILTIN_TABLES.derived("test-key", lambda: ["builtin"]) == ["builtin"]
