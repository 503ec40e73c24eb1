"""Compiles the modules every message passes through with mypyc (hub/compiled.py lists
them and says why); ``HUB_COMPILE=0`` installs them as Python. The rest of the build is
in pyproject.toml.

A machine that cannot compile them (no C compiler, no Python headers) still gets a
working hub, on Python and slower: the build says so (pip shows it with ``-v``), and
``hub run`` logs how many of them run compiled, as the benchmarks record.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


def _warn(reason: object) -> None:
    print(f"warning: the hub's hot modules stay Python ({reason})", file=sys.stderr)


class _OptionalBuildExt(build_ext):
    """Compiling is an optimisation: a failure leaves the Python modules in place.

    All or nothing: a module compiled without mypyc's shared library beside it would
    fail to import, so whatever was built before the failure is removed.
    """

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # setuptools raises several unrelated types here
            for ext in self.extensions:
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            _warn(exc)


def _extensions() -> list[object]:
    if os.environ.get("HUB_COMPILE", "1") == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        _warn(exc)
        return []
    compiled = runpy.run_path(str(HERE / "hub" / "compiled.py"))["COMPILED"]
    # Not the project's mypy settings: their pydantic plugin is not in the build
    # environment, so the modules the compiled ones import (configuration models, say)
    # are read without reporting their errors there (the project's mypy checks them),
    # and what comes from outside the project is read as Any.
    options = ["--config-file=", "--ignore-missing-imports", "--follow-imports=silent"]
    try:
        return list(mypycify([*options, *compiled], opt_level="3"))
    except SystemExit:  # mypyc exits on a type error it finds, having printed it
        _warn("mypyc stopped on the type errors printed above")
        return []
    except Exception as exc:
        _warn(exc)
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": _OptionalBuildExt})
