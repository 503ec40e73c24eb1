"""``${VAR}`` substitution: secrets come from the environment, never from the file."""

from __future__ import annotations

from typing import Any

import pytest

from hub.config.env import substitute


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${TOKEN}", "t0k3n"),
        ("Bearer ${TOKEN}", "Bearer t0k3n"),
        ("${HOST}:${PORT}", "his.example:2575"),
        ("${UNSET:-fallback}", "fallback"),
        ("${UNSET:-}", ""),
        ("${TOKEN:-fallback}", "t0k3n"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${EMPTY}", ""),
        ("price $$5", "price $5"),
        ("$${TOKEN}", "${TOKEN}"),
        ("$$$${TOKEN}", "$${TOKEN}"),
        ("$$${TOKEN}", "$t0k3n"),
        ("$TOKEN", "$TOKEN"),
        ("no variables", "no variables"),
    ],
)
def test_substitutes_strings(text: str, expected: str) -> None:
    env = {"TOKEN": "t0k3n", "HOST": "his.example", "PORT": "2575", "EMPTY": ""}
    missing: list[tuple[str, str]] = []
    assert substitute(text, env, missing=missing) == expected
    assert missing == []


def test_walks_mappings_and_lists_and_keeps_other_scalars() -> None:
    node: dict[str, Any] = {
        "clients": {"ops": {"token": "${OPS}", "scopes": ["read", "${SCOPE}"]}},
        "port": 8080,
        "enabled": True,
        "nothing": None,
    }
    out = substitute(node, {"OPS": "secret", "SCOPE": "operate"})
    assert out == {
        "clients": {"ops": {"token": "secret", "scopes": ["read", "operate"]}},
        "port": 8080,
        "enabled": True,
        "nothing": None,
    }
    assert node["clients"]["ops"]["token"] == "${OPS}", "the input is not modified"


def test_missing_variables_are_reported_with_their_paths() -> None:
    node = {
        "destinations": {"his": {"secret": "${HIS_SECRET}", "url": "https://${HIS_HOST}/x"}},
        "routes": [{"name": "a"}, {"options": {"key": "${ROUTE_KEY}"}}],
    }
    missing: list[tuple[str, str]] = []
    out = substitute(node, {}, missing=missing)
    assert missing == [
        ("destinations.his.secret", "HIS_SECRET"),
        ("destinations.his.url", "HIS_HOST"),
        ("routes[1].options.key", "ROUTE_KEY"),
    ]
    assert out["destinations"]["his"]["url"] == "https:///x"
