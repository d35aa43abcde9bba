"""gRPC stubs of the three services, on channels created once per process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tradebot.v1 import executor_pb2_grpc, market_pb2, market_pb2_grpc, strategy_pb2_grpc

from services.common.grpc_client import make_channel

IP_WEIGHT_TIMEOUT_SECONDS = 1.0


@dataclass
class ServiceClients:
    market: market_pb2_grpc.MarketDataStub
    strategy: strategy_pb2_grpc.StrategyStub
    executor: executor_pb2_grpc.ExecutorStub
    channels: dict[str, grpc.aio.Channel]

    @classmethod
    def connect(cls, market_addr: str, strategy_addr: str, executor_addr: str) -> ServiceClients:
        channels = {
            "market": make_channel(market_addr),
            "strategy": make_channel(strategy_addr),
            "executor": make_channel(executor_addr),
        }
        return cls(
            market=market_pb2_grpc.MarketDataStub(channels["market"]),
            strategy=strategy_pb2_grpc.StrategyStub(channels["strategy"]),
            executor=executor_pb2_grpc.ExecutorStub(channels["executor"]),
            channels=channels,
        )

    async def health(self, timeout: float = 2.0) -> dict[str, str]:
        """Each service's overall grpc.health.v1 status (SERVING, NOT_SERVING or the failure's code)."""

        async def check(channel: grpc.aio.Channel) -> str:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            except grpc.aio.AioRpcError as error:
                return error.code().name
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

        names = list(self.channels)
        statuses = await asyncio.gather(*(check(self.channels[name]) for name in names))
        return dict(zip(names, statuses, strict=True))

    async def ip_weight(self) -> dict[str, int]:
        """The IP's used request weight this minute as the market service last saw it, and its limit."""
        stats = await self.market.GetStats(market_pb2.GetStatsRequest(), timeout=IP_WEIGHT_TIMEOUT_SECONDS)
        return {"ipUsed": int(stats.weight_used_1m), "marketLimit": int(stats.weight_limit_1m)}

    async def wait_until_connected(self, timeout: float) -> None:
        """Give channels that are not connected (a service restarted, or never called yet) up to
        ``timeout`` seconds to connect, so calls made right after do not fail fast on a stale
        reconnect back-off. A connected channel costs nothing; a service still down simply stays
        down and its calls fail with UNAVAILABLE.
        """
        waiting = [
            channel
            for channel in self.channels.values()
            if channel.get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY
        ]
        if not waiting or timeout <= 0:
            return
        tasks = [asyncio.create_task(channel.channel_ready()) for channel in waiting]
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self.channels.values()))
