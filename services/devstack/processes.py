"""Launching the services as child processes: the one helper of `make run` and the e2e tests.

A ``ChildProcess`` captures its combined output line by line (tests grep it,
for secrets among other things), can echo it with a prefix, and runs in its
own session so a Ctrl-C in the terminal reaches only the launcher, which
then stops the children in order.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

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


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM if the launcher dies (even by SIGKILL).

    The children run in their own session (so a terminal Ctrl-C reaches only the launcher);
    without this a killed launcher would leave them running.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ChildProcess:
    def __init__(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        echo: Callable[[str, str], None] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.name = name
        self.lines: list[str] = []
        self._echo = echo
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115 (closed in stop)
        self._line_added = threading.Condition()
        self.process = subprocess.Popen(
            list(args),
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._reader = threading.Thread(target=self._read, name=f"{name}-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.rstrip("\n")
            with self._line_added:
                self.lines.append(line)
                self._line_added.notify_all()
            if self._log is not None:
                self._log.write(raw)
                self._log.flush()
            if self._echo is not None:
                self._echo(self.name, line)
        with self._line_added:
            self._line_added.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._line_added:
            while True:
                for line in self.lines[seen:]:
                    match = compiled.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (not self.alive() and not self._reader.is_alive()):
                    break
                self._line_added.wait(min(left, 0.2))
        raise TimeoutError(f"{self.name} did not print /{pattern}/ within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return "\n".join(self.lines)

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """SIGTERM without waiting (``stop`` then waits); lets several children drain at once."""
        if self.process.poll() is None:
            self.process.terminate()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (the services drain in-flight calls), then SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def wait_until(check: Callable[[], bool], what: str, timeout: float, process: ChildProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited with code {process.process.returncode}:\n{process.output()}")
        if check():
            return
        time.sleep(0.1)
    detail = f":\n{process.output()}" if process is not None else ""
    raise TimeoutError(f"{what} not ready within {timeout}s{detail}")


def grpc_serving(address: str, timeout: float = 1.0) -> bool:
    """True when the server at ``address`` answers grpc.health.v1 Check with SERVING."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (local URL)
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def start_mongo(
    engine: str = "memory",
    *,
    path: Path | None = None,
    port: int = 0,
    echo: Callable[[str, str], None] | None = None,
    log_path: Path | None = None,
    auth: tuple[str, str] | None = None,
) -> tuple[ChildProcess, str]:
    """The embedded MongoDB (mongoeco wire server); returns the process and its URI (without credentials).

    ``auth`` (user, password): clients must authenticate as that user (authSource admin)."""
    args = ["--engine", engine, "--port", str(port)]
    if path is not None:
        args += ["--path", str(path)]
    env: dict[str, str] = {}
    if auth is not None:
        args += ["--auth-user", auth[0]]
        env["MONGO_AUTH_PASSWORD"] = auth[1]
    process = ChildProcess("mongo", python_module("services.devstack.mongo_server", *args), env, echo=echo,
                           log_path=log_path)  # fmt: skip
    uri = process.wait_for_line(r"READY (\S+)", timeout=30).group(1)
    return process, uri
