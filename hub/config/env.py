"""``${VAR}`` and ``${VAR:-default}`` substitution, so secrets stay in the environment.

``${VAR:-default}`` uses the default when VAR is unset or empty, as the shell does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["substitute"]

_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\$")


def substitute(
    node: Any, env: Mapping[str, str], path: str = "", missing: list[tuple[str, str]] | None = None
) -> Any:
    """A copy of ``node`` with variables replaced; unset variables are appended to ``missing``.

    ``$$`` stands for a literal dollar sign.
    """
    if missing is None:
        missing = []
    if isinstance(node, dict):
        return {k: substitute(v, env, _join(path, str(k)), missing) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, env, f"{path}[{i}]", missing) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        # As in the shell and compose files: `:-` also replaces a variable set to "".
        if value is not None and (value or default is None):
            return value
        if default is not None:
            return default
        missing.append((path, name))
        return ""

    return _PATTERN.sub(replace, node)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
