"""Compiles the modules every message passes through with mypyc (hub/compiled.py lists
them and says why); ``HUB_COMPILE=0`` installs them as Python. The rest of the build is
in pyproject.toml."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def _extensions() -> list[object]:
    if os.environ.get("HUB_COMPILE", "1") == "0":
        return []
    from mypyc.build import mypycify

    compiled = runpy.run_path(str(HERE / "hub" / "compiled.py"))["COMPILED"]
    # Not the project's mypy settings: their pydantic plugin is not in the build
    # environment, and what these modules import from outside is read as Any.
    options = ["--config-file=", "--ignore-missing-imports"]
    return list(mypycify([*options, *compiled], opt_level="3"))


setup(ext_modules=_extensions())
