"""The mypyc build's guard and report (hub/compiled.py)."""

from __future__ import annotations

import asyncio
import importlib.machinery
import logging
import os
from pathlib import Path

import pytest

from hub.compiled import COMPILED, ROOT, StaleBuildError, check_fresh, compiled_modules
from hub.config.plan import plan_from_mapping
from hub.runtime import HubRuntime

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _checkout(tmp_path: Path, *, setup: bool = True) -> Path:
    """A source tree holding the first compiled module and a copy built from it."""
    source = tmp_path / COMPILED[0]
    source.parent.mkdir(parents=True)
    source.write_text("x = 1\n")
    source.with_suffix(SUFFIX).write_bytes(b"\x7fELF")
    if setup:
        (tmp_path / "setup.py").write_text("")
    return source


def _age(path: Path, seconds: float) -> None:
    stat = path.stat()
    os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


def test_a_source_newer_than_its_compiled_copy_is_refused(tmp_path: Path) -> None:
    source = _checkout(tmp_path)
    _age(source.with_suffix(SUFFIX), 60)
    with pytest.raises(StaleBuildError, match=f"{COMPILED[0]} changed after it was compiled"):
        check_fresh(tmp_path)


def test_a_fresh_copy_passes(tmp_path: Path) -> None:
    source = _checkout(tmp_path)
    _age(source, 60)
    check_fresh(tmp_path)


def test_an_installed_package_is_not_checked(tmp_path: Path) -> None:
    """Without setup.py beside it (a wheel), mtimes say nothing about the build."""
    source = _checkout(tmp_path, setup=False)
    _age(source.with_suffix(SUFFIX), 60)
    check_fresh(tmp_path)


def test_a_module_runs_compiled_exactly_when_a_copy_was_built() -> None:
    report = compiled_modules()
    assert list(report) == [p.removesuffix(".py").replace("/", ".") for p in COMPILED]
    for path, compiled in zip(COMPILED, report.values(), strict=True):
        built = any(
            (ROOT / path).with_suffix(s).is_file() for s in importlib.machinery.EXTENSION_SUFFIXES
        )
        assert compiled == built, path


def test_the_runtime_says_how_many_modules_run_compiled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plan = plan_from_mapping({"database_url": f"sqlite:///{tmp_path / 'hub.db'}"}, env={})

    async def start_and_stop() -> None:
        runtime = HubRuntime(plan, with_worker=False)
        await runtime.start()
        await runtime.stop()

    with caplog.at_level(logging.INFO, logger="hub.runtime"):
        asyncio.run(start_and_stop())
    compiled = sum(compiled_modules().values())
    assert f"{compiled} of {len(COMPILED)} hot-path modules compiled" in caplog.text
