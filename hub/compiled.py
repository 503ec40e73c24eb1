"""The modules every message passes through, compiled with mypyc when installed.

``setup.py`` reads :data:`COMPILED` from this file (run alone, so it imports only the
standard library) and compiles those modules in place; ``HUB_COMPILE=0`` at install,
or a machine that cannot compile them, keeps them Python. Against Python alone, eight
monitors on 2 cores, nine alternating pairs in one (slow) phase of the machine: hub
CPU 1.41 → 1.30 ms per message (means), end to end 1,028 → 1,101 msg/s, faster in all
nine (benchmarks/README.md, eighth round). Adding the worker's modules: end to end
2,564 → 2,689 msg/s, CPU per message −5% (sixteen pairs, tenth round). Compiled or not,
it is the same source, type-checked and tested alike.

In a source checkout a compiled copy older than its source would run old code without
a word: :func:`check_fresh` refuses that at import, naming the rebuild.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

__all__ = ["COMPILED", "StaleBuildError", "check_fresh", "compiled_modules"]

# Paths from the project root. Not here: modules defining pydantic models or setting
# attributes on functions (mapping registrations), which mypyc does not compile.
COMPILED = (
    "hub/hl7v2/er7.py",
    "hub/hl7v2/framing.py",
    "hub/hl7v2/ack.py",
    "hub/ids.py",
    "mappings/hl7v2/inbound.py",
    # The delivery worker's own loop and what it reads for every delivery.
    "hub/engine/worker.py",
    "hub/engine/routing.py",
    "hub/store/bodies.py",
    "mappings/incident.py",
)

ROOT = Path(__file__).resolve().parents[1]


class StaleBuildError(ImportError):
    """A compiled module is older than its source."""


def _module(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def check_fresh(root: Path = ROOT) -> None:
    """Raise StaleBuildError if a compiled copy in a source checkout (where setup.py
    sits) is older than its ``.py``; installed packages are built whole and pass."""
    if not (root / "setup.py").is_file():
        return
    for path in COMPILED:
        source = root / path
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            built = source.with_suffix(suffix)
            if built.is_file() and source.stat().st_mtime > built.stat().st_mtime:
                raise StaleBuildError(
                    f"{path} changed after it was compiled ({built.name}): run `make` "
                    "to compile it again, or delete the .so files to run it as Python"
                )


def compiled_modules() -> dict[str, bool]:
    """Each module of COMPILED and whether it loads compiled (for benchmark reports)."""
    out = {}
    for path in COMPILED:
        spec = importlib.util.find_spec(_module(path))
        origin = spec.origin if spec is not None else None
        out[_module(path)] = origin is not None and not origin.endswith(".py")
    return out
