"""The one seam where python-binance clients are built.

python-binance has no base-URL argument for futures and its ``create()``
pings the public spot API. Here the client is constructed directly (no
ping) and every URL it can reach is pointed at the configured endpoints, so
no request ever goes to a hard-coded host: tests and testnet deployments
point these at other servers. ``sync_time`` measures the offset against
the futures server clock so signed requests do not fail with -1021.

URLs are roots without the API prefix, e.g. ``https://fapi.binance.com``
(``BINANCE_FUTURES_URL``), ``https://testnet.binancefuture.com``
(``BINANCE_FUTURES_TESTNET_URL``), ``https://api.binance.com``
(``BINANCE_SPOT_URL``).
"""

from __future__ import annotations

import time

from binance import AsyncClient

DEFAULT_FUTURES_URL = "https://fapi.binance.com"
DEFAULT_FUTURES_TESTNET_URL = "https://testnet.binancefuture.com"
DEFAULT_SPOT_URL = "https://api.binance.com"


class ConfiguredAsyncClient(AsyncClient):
    """An AsyncClient whose every REST request goes to the configured roots."""

    def __init__(
        self,
        *,
        futures_url: str,
        spot_url: str,
        api_key: str | None = None,
        api_secret: str | None = None,
        request_timeout: float = 10.0,
    ) -> None:
        super().__init__(api_key=api_key, api_secret=api_secret, requests_params={"timeout": request_timeout})
        futures_root = futures_url.rstrip("/")
        spot_root = spot_url.rstrip("/")
        # USDⓈ-M futures (live or testnet: the caller picks the root, testnet=False
        # keeps python-binance from switching to its own testnet host).
        self.FUTURES_URL = f"{futures_root}/fapi"
        self.FUTURES_TESTNET_URL = f"{futures_root}/fapi"
        self.FUTURES_DATA_URL = f"{futures_root}/futures/data"
        self.FUTURES_DATA_TESTNET_URL = f"{futures_root}/futures/data"
        self.API_URL = f"{spot_root}/api"
        self.MARGIN_API_URL = f"{spot_root}/sapi"
        self.API_TESTNET_URL = f"{spot_root}/api"

    async def sync_time(self) -> int:
        """Set the offset between the local clock and the futures server's; returns it in ms."""
        before = int(time.time() * 1000)
        server = await self.futures_time()
        after = int(time.time() * 1000)
        self.timestamp_offset = int(server["serverTime"]) - (before + after) // 2
        return self.timestamp_offset

    def last_response_headers(self) -> dict[str, str]:
        """Headers of the last response (X-MBX-USED-WEIGHT-1M, X-MBX-ORDER-COUNT-*, Retry-After)."""
        response = self.response
        if response is None:
            return {}
        return {key.upper(): value for key, value in response.headers.items()}
