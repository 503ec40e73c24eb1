"""Fixtures of the store tests; the builders live in ``storekit``."""

from __future__ import annotations

import pytest
from storekit import Records


@pytest.fixture
def records() -> Records:
    return Records()
