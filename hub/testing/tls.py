"""A self-signed TLS certificate for tests, made with the ``openssl`` command line.

(The ``cryptography`` package is not a dependency of this project.)
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["OpensslNotFound", "self_signed_certificate"]


class OpensslNotFound(RuntimeError):
    """There is no ``openssl`` command to make a certificate with; a test should skip."""


def self_signed_certificate(
    folder: Path, *, hosts: Sequence[str] = ("127.0.0.1", "localhost")
) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (EC P-256, valid two days) into ``folder``.

    The certificate names ``hosts[0]`` as its subject and every host (IP address or DNS
    name) as a subject alternative name, so a client that trusts ``cert.pem`` as its CA
    verifies a server using the pair. Raises :class:`OpensslNotFound` when there is no
    ``openssl`` on the PATH, and ``subprocess.CalledProcessError`` when it fails.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise OpensslNotFound(
            "no openssl command to make a test certificate (cryptography not installed)"
        )
    names = ",".join(f"{'IP' if _is_ip(host) else 'DNS'}:{host}" for host in hosts)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", f"/CN={hosts[0]}", "-addext", f"subjectAltName={names}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
