"""A started hub process collects garbage less often, and never its start-up objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from hub.collector import GC_THRESHOLDS, tune_collector


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored")
def test_tuning_freezes_what_exists_and_raises_the_thresholds() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    tune_collector()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 1000  # the modules and schemas loaded by now
