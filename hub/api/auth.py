"""Bearer-token clients with scopes. With no clients configured the API is open, which
`hub check` reports, so that only a sandbox or a laptop runs that way."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import HTTPException, Request

from hub.config.spec import ClientSpec, Scope

__all__ = ["Caller", "Gate"]


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    sources: frozenset[str]


class Gate:
    def __init__(self, clients: dict[str, ClientSpec]) -> None:
        self._clients = [
            (name, spec.token.get_secret_value().encode(), frozenset(spec.scopes), spec)
            for name, spec in clients.items()
        ]

    @property
    def open(self) -> bool:
        return not self._clients

    def check(self, request: Request, scope: Scope) -> Caller:
        """The authenticated caller, or 401/403; constant-time token comparison."""
        if self.open:
            return Caller("anonymous", frozenset({"*"}))
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "bearer token required", {"WWW-Authenticate": "Bearer"})
        given = token.strip().encode()
        for name, secret, scopes, spec in self._clients:
            if hmac.compare_digest(given, secret):
                if scope not in scopes:
                    raise HTTPException(403, f"client {name!r} lacks the {scope!r} scope")
                return Caller(name, frozenset(spec.sources))
        raise HTTPException(401, "unknown token", {"WWW-Authenticate": "Bearer"})
