"""Fixtures shared by every test folder.

``database_url`` runs a test on SQLite and, when HUB_TEST_DATABASE_URL is set (as
.ci/run does), again on PostgreSQL in a schema of its own that is dropped afterwards.
``certificate`` is a self-signed TLS certificate for 127.0.0.1 and localhost. Proxy
environment variables are cleared for every test (``no_proxy_environment``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.testing.postgres import postgres_schema
from hub.testing.tls import OpensslNotFound, self_signed_certificate

PG_ENV = "HUB_TEST_DATABASE_URL"


PROXY_VARIABLES = tuple(
    name
    for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    for name in (base, base.upper())
)


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test goes through a proxy the machine's environment names (the http and fhir
    connectors follow HTTPS_PROXY and co.); proxy tests set the variables they need."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set")
    with postgres_schema(base) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cert.pem, key.pem): a self-signed certificate for 127.0.0.1 and localhost."""
    try:
        return self_signed_certificate(tmp_path_factory.mktemp("tls"))
    except OpensslNotFound as missing:
        pytest.skip(str(missing))
