"""Fixtures for unit tests of the engine core."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hub.store.store import Store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A migrated, empty store on each database the run covers."""
    opened = Store.open(database_url, migrate=True)
    try:
        yield opened
    finally:
        opened.close()
