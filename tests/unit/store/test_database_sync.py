"""The SQLite PRAGMAs each engine of the store runs with: hub.yaml ``database_sync``, and
the WAL checkpoint threshold."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from hub.config.plan import plan_from_mapping
from hub.store.database import WAL_CHECKPOINT_PAGES, make_engine
from hub.store.store import Store

FULL, NORMAL = 2, 1  # PRAGMA synchronous values


def _synchronous(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("PRAGMA synchronous")).scalar_one())


def test_make_engine_applies_the_setting(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    for sync, expected in (("full", FULL), ("normal", NORMAL)):
        engine = make_engine(url, sync=sync)  # type: ignore[arg-type]
        try:
            assert _synchronous(engine) == expected
        finally:
            engine.dispose()


def test_make_engine_refuses_an_unknown_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_engine(f"sqlite:///{tmp_path / 'hub.db'}", sync="off")  # type: ignore[arg-type]


def test_store_full_fsyncs_ingest_not_bookkeeping(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}", migrate=True)
    try:
        assert _synchronous(store.engine) == FULL
        assert _synchronous(store._bookkeeping) == NORMAL
    finally:
        store.close()


def test_store_normal_uses_one_engine(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}", migrate=True, sync="normal")
    try:
        assert store._bookkeeping is store.engine
        assert _synchronous(store.engine) == NORMAL
    finally:
        store.close()


def test_hub_yaml_setting() -> None:
    assert plan_from_mapping({}, {}, "hub.yaml").spec.database_sync == "full"
    plan = plan_from_mapping({"database_sync": "normal"}, {}, "hub.yaml")
    assert plan.spec.database_sync == "normal"


def test_every_engine_checkpoints_late(tmp_path: Path) -> None:
    """The WAL checkpoint threshold is per connection: both engines must carry it, or a
    commit on the one without it checkpoints at SQLite's 1,000 pages."""
    store = Store.open(f"sqlite:///{tmp_path / 'hub.db'}", migrate=True)
    try:
        for engine in (store.engine, store._bookkeeping):
            with engine.connect() as conn:
                pages = conn.execute(text("PRAGMA wal_autocheckpoint")).scalar_one()
            assert pages == WAL_CHECKPOINT_PAGES > 1000
    finally:
        store.close()
