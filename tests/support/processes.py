"""Starting real service processes for tests: the devstack launcher, under the names tests use.

One launcher for `make run`, the e2e tests and every process test
(services.devstack.processes); ``ManagedProcess`` is its ``ChildProcess``.
"""

from __future__ import annotations

from services.devstack.processes import (
    REPO_ROOT,
    ChildProcess,
    free_port,
    grpc_serving,
    http_ok,
    python_module,
    start_mongo,
    wait_for_port,
    wait_until,
)

ManagedProcess = ChildProcess

__all__ = [
    "REPO_ROOT",
    "ChildProcess",
    "ManagedProcess",
    "free_port",
    "grpc_serving",
    "http_ok",
    "python_module",
    "start_mongo",
    "wait_for_port",
    "wait_until",
]
