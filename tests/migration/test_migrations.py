"""Migrations build exactly the declared schema, on both databases, both ways."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from hub.store.database import alembic_config, make_engine, upgrade
from hub.store.tables import metadata

TABLES = {"inbound_messages", "events", "deliveries", "attempts", "audit_log"}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = make_engine(database_url)
    try:
        yield made
    finally:
        made.dispose()


def differences(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))


def revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def downgrade(engine: Engine, target: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, target)


def test_upgrade_from_empty_matches_the_declared_tables(engine: Engine) -> None:
    assert inspect(engine).get_table_names() == []
    upgrade(engine)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision(engine) == head
    assert set(inspect(engine).get_table_names()) >= TABLES
    assert differences(engine) == []


def test_downgrade_to_base_and_up_again(engine: Engine) -> None:
    upgrade(engine)
    downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    assert revision(engine) is None
    upgrade(engine)
    assert differences(engine) == []


def test_upgrade_is_idempotent(engine: Engine) -> None:
    upgrade(engine)
    upgrade(engine)
    assert differences(engine) == []


def test_every_revision_downgrades_and_upgrades_one_step(engine: Engine) -> None:
    script = ScriptDirectory.from_config(alembic_config())
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert revisions, "no migrations found"
    for rev in revisions:
        upgrade(engine, rev)
        assert revision(engine) == rev
    for rev in reversed(revisions):
        downgrade(engine, "-1")
        assert revision(engine) != rev
    assert revision(engine) is None
