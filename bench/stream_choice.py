"""``python -m bench.stream_choice [--accounts 2000] [--events-per-key 5]``: which user-data stream client to use.

Compares, for one process holding every live account's user-data stream:
(a) python-binance's ``BinanceSocketManager.futures_user_socket``: one WebSocket per account
    (``<FSTREAM_URL>private/ws?listenKey=<key>``; the URL root is a class attribute, pointed here at a
    local server), each with its own read-loop task, queue and 5-minute listenKey timer;
(b) ``services.executor.binance.user_stream.UserStreamHub``: combined streams, up to 200 keys a connection.

A local ``websockets`` server (a child process, so its work is not counted) serves both URL forms and
SUBSCRIBE, and on command sends N events to every subscribed key. Each client runs in a fresh child
process and reports: connection attempts, open connections, RSS growth (psutil), wall and CPU time to
bring every key up, CPU time to receive every event. listenKeys come from a stub (no REST here).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import resource
import subprocess
import sys
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

EVENT = {"e": "ORDER_TRADE_UPDATE", "E": 1_700_000_000_000, "T": 1_700_000_000_000, "o": {
    "s": "BTCUSDT", "c": "tb-7f3a-E", "S": "BUY", "o": "MARKET", "f": "GTC", "q": "0.010", "p": "0",
    "ap": "50000", "sp": "0", "x": "TRADE", "X": "FILLED", "i": 8389765, "l": "0.010", "z": "0.010",
    "L": "50000", "N": "USDT", "n": "0.25", "T": 1_700_000_000_000, "t": 1234, "b": "0", "a": "0",
    "m": False, "R": False, "wt": "CONTRACT_PRICE", "ot": "MARKET", "ps": "BOTH", "cp": False, "rp": "0"}}


def _more_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def _key(i: int) -> str:
    return f"bench{i:05d}".ljust(64, "k")   # listenKeys are 64 characters


# ---------------------------------------------------------------- the server (child process)
async def _serve() -> None:
    from websockets.asyncio.server import ServerConnection, serve

    conns: dict[ServerConnection, tuple[bool, set[str]]] = {}   # -> (combined framing, keys)
    attempts = 0

    async def emit(conn: ServerConnection, combined: bool, keys: set[str], per_key: int) -> int:
        data = json.dumps(EVENT)
        sent = 0
        for key in sorted(keys):
            text = f'{{"stream":"{key}","data":{data}}}' if combined else data
            for _ in range(per_key):
                await conn.send(text)
                sent += 1
        return sent

    async def control(ws: ServerConnection) -> None:
        async for raw in ws:
            command = json.loads(raw)
            if command["cmd"] == "emit":
                counts = await asyncio.gather(*(emit(c, combined, keys, command["per_key"])
                                                for c, (combined, keys) in list(conns.items())))
                await ws.send(json.dumps({"sent": sum(counts)}))
            else:
                await ws.send(json.dumps({"connections": len(conns), "attempts": attempts,
                                          "keys": sum(len(keys) for _, keys in conns.values())}))

    async def handler(ws: ServerConnection) -> None:
        nonlocal attempts
        url = urlsplit(ws.request.path if ws.request else "/")
        if url.path == "/control":
            await control(ws)
            return
        attempts += 1
        query = parse_qs(url.query)
        if url.path.endswith("/stream"):
            keys, combined = {k for k in query.get("streams", [""])[0].split("/") if k}, True
        else:   # python-binance: /private/ws?listenKey=K
            keys, combined = set(query.get("listenKey", [])), False
        conns[ws] = (combined, keys)
        try:
            async for raw in ws:
                request = json.loads(raw)
                if request.get("method") == "SUBSCRIBE":
                    keys.update(request["params"])
                elif request.get("method") == "UNSUBSCRIBE":
                    keys.difference_update(request["params"])
                await ws.send(json.dumps({"result": None, "id": request.get("id")}))
        except Exception:   # noqa: BLE001, S110 - a client going away mid-benchmark is not an error here
            pass
        finally:
            conns.pop(ws, None)

    async with serve(handler, "127.0.0.1", 0, max_queue=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)   # type: ignore[index]
        await asyncio.Future()


# ---------------------------------------------------------------- the clients (child processes)
class _StaticKeys:
    def __init__(self, key: str) -> None:
        self.key = key

    async def create(self) -> str:
        return self.key

    async def keepalive(self, listen_key: str) -> None:
        return None

    async def close(self, listen_key: str) -> None:
        return None


class _Counter:
    def __init__(self, received: list[int]) -> None:
        self.received = received

    def on_live(self) -> None:
        pass

    def on_event(self, event: Any) -> None:
        self.received[0] += 1

    def on_gap(self, reason: str) -> None:
        pass


class _StubClient:
    """What BinanceSocketManager reads of an AsyncClient for a futures user socket."""

    tld, testnet, demo, https_proxy = "com", False, False, None

    def __init__(self, key: str) -> None:
        self.key = key

    async def futures_stream_get_listen_key(self) -> str:
        return self.key


async def _client(kind: str, url: str, accounts: int, per_key: int) -> dict[str, Any]:
    import psutil
    from binance.ws.streams import BinanceSocketManager
    from websockets.asyncio.client import connect

    from services.executor.binance.user_stream import UserStreamHub

    _more_files()   # both libraries are imported before the baseline: only what the sockets cost is counted
    process = psutil.Process()
    received = [0]
    gc.collect()
    rss0, cpu0, wall0 = process.memory_info().rss, time.process_time(), time.perf_counter()
    closers: list[Any] = []
    if kind == "hub":
        hub = UserStreamHub(url)
        for i in range(accounts):
            await hub.add(f"acct{i}", _StaticKeys(_key(i)), _Counter(received))
        while hub.stats()["liveAccounts"] < accounts:
            await asyncio.sleep(0.01)
        closers.append(hub.close)
    else:
        sockets = []
        for i in range(accounts):
            manager = BinanceSocketManager(_StubClient(_key(i)))   # type: ignore[arg-type]
            manager.FSTREAM_URL = url + "/"
            sockets.append(manager.futures_user_socket())
        await asyncio.gather(*(s.__aenter__() for s in sockets))

        async def consume(socket: Any) -> None:
            while True:
                message = await socket.recv()
                if message.get("e") != "error":
                    received[0] += 1

        tasks = [asyncio.create_task(consume(s)) for s in sockets]

        async def close_all() -> None:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*(s.__aexit__(None, None, None) for s in sockets), return_exceptions=True)

        closers.append(close_all)
    up_wall, up_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    gc.collect()
    rss_up = process.memory_info().rss - rss0

    async with connect(url + "/control", max_size=None) as control:
        await control.send(json.dumps({"cmd": "stats"}))
        server = json.loads(await control.recv())
        cpu1, wall1 = time.process_time(), time.perf_counter()
        await control.send(json.dumps({"cmd": "emit", "per_key": per_key}))
        sent = json.loads(await control.recv())["sent"]
        while received[0] < sent:
            await asyncio.sleep(0.005)
        events_cpu, events_wall = time.process_time() - cpu1, time.perf_counter() - wall1
    rss_events = process.memory_info().rss - rss0
    for close in closers:
        await close()
    return {"client": kind, "accounts": accounts, "connections": server["connections"],
            "attempts": server["attempts"], "keys": server["keys"], "up_wall_s": up_wall, "up_cpu_s": up_cpu,
            "rss_up_mib": rss_up / 2**20, "rss_after_events_mib": rss_events / 2**20, "events": sent,
            "events_cpu_s": events_cpu, "events_wall_s": events_wall}


# ---------------------------------------------------------------- orchestration
def _measure(kind: str, accounts: int, per_key: int) -> dict[str, Any]:
    server = subprocess.Popen([sys.executable, "-m", "bench.stream_choice", "--serve"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        answer = subprocess.run([sys.executable, "-m", "bench.stream_choice", "--client", kind,
                                 "--url", f"ws://127.0.0.1:{port}", "--accounts", str(accounts),
                                 "--events-per-key", str(per_key)], capture_output=True, text=True, check=True)
        return json.loads(answer.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=10)


def _table(rows: list[dict[str, Any]]) -> str:
    columns = [("client", "client", "{}"), ("connections", "conns", "{}"), ("attempts", "connect attempts", "{}"),
               ("up_wall_s", "bring-up s", "{:.2f}"), ("up_cpu_s", "bring-up CPU s", "{:.2f}"),
               ("rss_up_mib", "RSS up MiB", "{:.1f}"), ("rss_after_events_mib", "RSS after events MiB", "{:.1f}"),
               ("events", "events", "{}"), ("events_cpu_s", "events CPU s", "{:.3f}"),
               ("events_wall_s", "events wall s", "{:.3f}")]
    cells = [[label for _, label, _ in columns]] + [[fmt.format(row[key]) for key, _, fmt in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--events-per-key", type=int, default=5)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=("hub", "python-binance"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _more_files()
    if args.serve:
        asyncio.run(_serve())
        return
    if args.client:
        print(json.dumps(asyncio.run(_client(args.client, args.url, args.accounts, args.events_per_key))))
        return
    rows = [_measure(kind, args.accounts, args.events_per_key) for kind in ("python-binance", "hub")]
    print(_table(rows))
    print(json.dumps(rows))
    print(f"Binance allows 300 connection attempts per 5 minutes per IP: {args.accounts} one-per-account "
          f"sockets need at least {-(-args.accounts // 300) * 5} minutes to come up (and again after an outage).")


if __name__ == "__main__":
    main()
