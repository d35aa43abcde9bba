"""Container health check over the standard gRPC health protocol.

    python -m services.common.healthprobe HOST:PORT [SERVICE_NAME] [--timeout S]

Calls ``grpc.health.v1.Health/Check`` once and exits 0 when the answer is
SERVING, 1 for anything else (NOT_SERVING, unknown service, nothing
listening, deadline exceeded). Docker's HEALTHCHECK reserves other exit
codes, so every failure is 1. No probe binary can be downloaded here, and
the images already ship grpcio, so this is the probe they use.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

EXIT_SERVING = 0
EXIT_UNHEALTHY = 1


def check(address: str, service: str = "", timeout: float = 3.0) -> tuple[int, str]:
    """One Health/Check call; returns (exit code, one-line status)."""
    # A plain target: the probe asks exactly the process it was pointed at,
    # never another replica behind the same name.
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            name = code.name if code is not None else "ERROR"
            return EXIT_UNHEALTHY, f"{address} {service or '<server>'}: {name}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    exit_code = EXIT_SERVING if reply.status == health_pb2.HealthCheckResponse.SERVING else EXIT_UNHEALTHY
    return exit_code, f"{address} {service or '<server>'}: {status}"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services.common.healthprobe",
        description="Exit 0 when a gRPC server reports SERVING through grpc.health.v1, else 1.",
    )
    parser.add_argument("address", help="HOST:PORT of the gRPC server, e.g. 127.0.0.1:50051")
    parser.add_argument(
        "service",
        nargs="?",
        default="",
        help="full service name (e.g. tradebot.v1.MarketData); empty asks for the whole server",
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    exit_code, status = check(args.address, args.service, args.timeout)
    print(status, file=sys.stdout if exit_code == EXIT_SERVING else sys.stderr)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
