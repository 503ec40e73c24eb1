"""A throwaway PostgreSQL schema, for tests and benchmarks that need a database of their own.

``postgres_schema(base_url)`` creates a schema with a unique name, yields a URL whose
``search_path`` points at it (so the hub's tables and migrations land there), and drops
it with everything in it when the block ends, also when the block fails.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

__all__ = ["postgres_schema"]


@contextlib.contextmanager
def postgres_schema(base_url: str, *, prefix: str = "hubtest") -> Iterator[str]:
    """Create the schema ``{prefix}_{random}`` on ``base_url``; yield a URL using it.

    The caller must not keep connections open past the block: the schema is dropped
    (``CASCADE``) when the block ends. ``base_url`` needs the right to create schemas.
    """
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()
