"""The whole system as child processes: three gRPC services and the gateway.

Used by ``python -m services.devstack`` (``make run``) and by the e2e tests,
so both start exactly the same processes the same way. With ``tls_dir`` (the
output of ``make certs``) every gRPC link is mutual TLS, as in compose and
Kubernetes, and readiness is read on each service's plaintext health port.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.devstack.processes import ChildProcess, free_port, grpc_serving, http_ok, python_module, wait_until

GRPC_SERVICES = ("market", "strategy", "executor")


@dataclass(frozen=True)
class StackPorts:
    market: int = 50051
    strategy: int = 50052
    executor: int = 50053
    gateway: int = 8000

    @classmethod
    def free(cls) -> StackPorts:
        return cls(free_port(), free_port(), free_port(), free_port())

    def grpc(self, service: str) -> int:
        return int(getattr(self, service))


@dataclass
class StackConfig:
    mongodb_uri: str
    cron_secret: str
    credentials_keys: str
    mongodb_db: str = "tradebots"
    ports: StackPorts = field(default_factory=StackPorts)
    host: str = "127.0.0.1"
    # Extra environment per process name ("market", "strategy", "executor", "gateway"); "*" applies to all.
    env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    echo: Callable[[str, str], None] | None = None
    log_dir: Path | None = None
    startup_timeout: float = 60.0
    tls_dir: Path | None = None   # `make certs` output: mutual TLS between gateway, executor and services
    health_ports: Mapping[str, int] = field(default_factory=dict)   # with TLS: each service's probe port

    def address(self, service: str) -> str:
        return f"{self.host}:{self.ports.grpc(service)}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.ports.gateway}"

    def environment(self, name: str) -> dict[str, str]:
        """What each process reads (each service reads only its own variables)."""
        common = {"MONGODB_DB": self.mongodb_db, **self.env.get("*", {})}
        own: dict[str, str]
        if name == "market":
            own = {"GRPC_HOST": self.host, "GRPC_PORT": str(self.ports.market), "MARKET_DATA_SOURCE": "simulated"}
        elif name == "strategy":
            own = {"GRPC_HOST": self.host, "GRPC_PORT": str(self.ports.strategy)}
        elif name == "executor":
            own = {
                "GRPC_HOST": self.host,
                "GRPC_PORT": str(self.ports.executor),
                "MONGODB_URI": self.mongodb_uri,
                "CREDENTIALS_KEYS": self.credentials_keys,
                "MARKET_ADDR": self.address("market"),   # prices and filters the executor sizes with
            }
        else:
            own = {
                "GATEWAY_HOST": self.host,
                "GATEWAY_PORT": str(self.ports.gateway),
                "MONGODB_URI": self.mongodb_uri,
                "CRON_SECRET": self.cron_secret,
                "MARKET_ADDR": self.address("market"),
                "STRATEGY_ADDR": self.address("strategy"),
                "EXECUTOR_ADDR": self.address("executor"),
            }
            if "WEBHOOK_ALLOWED_NETWORKS" not in os.environ:
                # Dev convenience: the stack runs on loopback and so do the receivers people test webhooks with.
                # Production keeps the default (none); a value set in the environment wins.
                own["WEBHOOK_ALLOWED_NETWORKS"] = "127.0.0.0/8,::1/128"
        return {**common, **own, **self._tls_environment(name), **self.env.get(name, {})}

    def _tls_environment(self, name: str) -> dict[str, str]:
        if self.tls_dir is None:
            return {}
        tls = self.tls_dir
        values: dict[str, str] = {}
        if name in GRPC_SERVICES:
            values |= {"GRPC_TLS_CERT": str(tls / f"{name}.crt"), "GRPC_TLS_KEY": str(tls / f"{name}.key"),
                       "GRPC_TLS_CLIENT_CA": str(tls / "ca.crt"), "GRPC_HEALTH_PORT": str(self.health_port(name))}
        if name in ("gateway", "executor"):   # the callers: the gateway of all three, the executor of market
            values |= {"GRPC_TLS_CA": str(tls / "ca.crt"), "GRPC_TLS_CLIENT_CERT": str(tls / f"{name}.crt"),
                       "GRPC_TLS_CLIENT_KEY": str(tls / f"{name}.key")}
        return values

    def health_port(self, service: str) -> int:
        return self.health_ports[service]

    def probe_address(self, service: str) -> str:
        """Where readiness is asked: the plaintext health port with TLS, else the service port."""
        return f"{self.host}:{self.health_port(service)}" if self.tls_dir is not None else self.address(service)


class Stack:
    """Starts in dependency order, waits for health, stops in reverse order."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.processes: dict[str, ChildProcess] = {}

    def start(self) -> Stack:
        try:
            self.start_services()
            self.start_gateway()
        except BaseException:
            self.stop()
            raise
        return self

    def start_services(self, names: tuple[str, ...] = GRPC_SERVICES) -> None:
        for name in names:
            self._spawn(name)
        # Wait for all three at once: their start-ups overlap.
        with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
            waits = [pool.submit(self.wait_grpc, name) for name in names]
            for wait in waits:
                wait.result()

    def start_gateway(self) -> None:
        self._spawn("gateway")
        url = f"{self.config.gateway_url}/healthz"
        wait_until(lambda: http_ok(url), "gateway /healthz", self.config.startup_timeout, self.processes["gateway"])

    def wait_grpc(self, name: str) -> None:
        address = self.config.probe_address(name)
        wait_until(lambda: grpc_serving(address), f"{name} on {address}", self.config.startup_timeout,
                   self.processes[name])  # fmt: skip

    def restart(self, name: str) -> None:
        self.processes.pop(name).stop()
        if name == "gateway":
            self.start_gateway()
        else:
            self.start_services((name,))

    def _spawn(self, name: str) -> ChildProcess:
        log_path = None if self.config.log_dir is None else self.config.log_dir / f"{name}.log"
        process = ChildProcess(name, python_module(f"services.{name}"), self.config.environment(name),
                               echo=self.config.echo, log_path=log_path)  # fmt: skip
        self.processes[name] = process
        return process

    def dead(self) -> list[str]:
        return [name for name, process in self.processes.items() if not process.alive()]

    def output(self) -> str:
        return "\n".join(f"[{name}] {line}" for name, process in self.processes.items() for line in process.lines)

    def stop(self) -> dict[str, int]:
        """The gateway first (no new ticks), then the services; each drains in-flight calls."""
        codes: dict[str, int] = {}
        if "gateway" in self.processes:
            codes["gateway"] = self.processes["gateway"].stop()
        services = [self.processes[name] for name in reversed(GRPC_SERVICES) if name in self.processes]
        for process in services:  # the services drain in parallel
            process.terminate()
        for process in services:
            codes[process.name] = process.stop()
        return codes
