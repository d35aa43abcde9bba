"""The one seam where python-binance clients are built.

python-binance has no base-URL argument for futures and its ``create()``
pings the public spot API. Here the client is constructed directly (no
ping) and every URL it can reach is pointed at the configured endpoints, so
no request ever goes to a hard-coded host: tests and testnet deployments
point these at other servers.

Every request goes through the process's weight governor for its host
(``weight_governor``): reserved before it is sent, settled from the answer's
headers, never sent while a 429 or 418 is in force. Signed requests take
their timestamp offset from the process's ``ServerClock`` for the host: one
time sync per process, not one per account.

URLs are roots without the API prefix, e.g. ``https://fapi.binance.com``
(``BINANCE_FUTURES_URL``), ``https://testnet.binancefuture.com``
(``BINANCE_FUTURES_TESTNET_URL``), ``https://api.binance.com``
(``BINANCE_SPOT_URL``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from binance import AsyncClient
from binance.exceptions import BinanceAPIException

from services.common.binance_weights import request_weight
from services.common.server_clock import ServerClock, server_clock
from services.common.weight_governor import GovernorSettings, WeightGovernor, governor_for

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
        weight_share: float = 1.0,
        governor_settings: GovernorSettings | None = None,
        clock: Callable[[], float] = time.time,
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
        host = urlsplit(futures_root).netloc or futures_root
        self.governor: WeightGovernor = governor_for(host, default_share=weight_share, settings=governor_settings,
                                                     clock=clock)
        self.server_clock: ServerClock = server_clock(host)

    async def sync_time(self) -> int:
        """The process's offset to the futures server's clock (measured at most every 30 minutes); ms."""
        self.timestamp_offset = await self.server_clock.ensure(self.futures_time)
        return self.timestamp_offset

    async def resync_time(self, refused_at: float) -> int:
        """Binance answered -1021 to a request sent at ``refused_at`` (monotonic): measure the offset again,
        once for a burst of such answers."""
        self.timestamp_offset = await self.server_clock.resync(self.futures_time, refused_at)
        return self.timestamp_offset

    def _get_request_kwargs(self, method: str, signed: bool, force_params: bool = False, **kwargs: Any) -> Any:
        self.timestamp_offset = self.server_clock.offset_ms   # another account's client may have re-measured it
        return super()._get_request_kwargs(method, signed, force_params, **kwargs)

    async def _request(self, method: str, uri: str, signed: bool, force_params: bool = False, **kwargs: Any) -> Any:
        """Every REST request: weight reserved first, the answer's weight header and 429/418 settled after."""
        params = kwargs.get("data") or kwargs.get("params") or {}
        path = urlsplit(uri).path
        ticket = await self.governor.acquire(request_weight(method, path, params if isinstance(params, dict) else {}),
                                             f"{method.upper()} {path}")
        try:
            answer = await super()._request(method, uri, signed, force_params, **kwargs)
        except BinanceAPIException as exc:
            headers = dict(getattr(exc.response, "headers", None) or {})
            self.governor.settle(ticket, int(exc.status_code or 0), headers, str(exc.message or ""))
            raise
        except BaseException:
            self.governor.settle(ticket, None, {})
            raise
        self.governor.settle(ticket, 200, self.last_response_headers())
        return answer

    def last_response_headers(self) -> dict[str, str]:
        """Headers of the last response (X-MBX-USED-WEIGHT-1M, X-MBX-ORDER-COUNT-*, Retry-After)."""
        response = self.response
        if response is None:
            return {}
        return {key.upper(): value for key, value in response.headers.items()}
