"""Starting real service processes for tests, on free ports, and stopping them."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout}s")


class ManagedProcess:
    """A child process whose combined output is captured (tests grep it for secrets)."""

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> None:
        self.name = name
        self.lines: list[str] = []
        self._ready_event = threading.Event()
        self._ready_pattern: re.Pattern[str] | None = None
        self.ready_match: re.Match[str] | None = None
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.process = subprocess.Popen(
            list(args),
            cwd=REPO_ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if self._ready_pattern is not None and not self._ready_event.is_set():
                match = self._ready_pattern.search(line)
                if match:
                    self.ready_match = match
                    self._ready_event.set()

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        self._ready_pattern = re.compile(pattern)
        for line in list(self.lines):
            match = self._ready_pattern.search(line)
            if match:
                return match
        if not self._ready_event.wait(timeout):
            raise TimeoutError(f"{self.name} did not print /{pattern}/ within {timeout}s:\n{self.output()}")
        assert self.ready_match is not None
        return self.ready_match

    def output(self) -> str:
        return "\n".join(self.lines)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(timeout=5)
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def start_mongo(engine: str = "memory") -> tuple[ManagedProcess, str]:
    process = ManagedProcess("mongo", python_module("services.devstack.mongo_server", "--engine", engine), {})
    uri = process.wait_for_line(r"READY (\S+)").group(1)
    return process, uri
