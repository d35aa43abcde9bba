"""The live broker implements the executor's ``Broker`` seam method for method."""

from __future__ import annotations

import inspect

from services.executor.brokers.base import Broker
from services.executor.binance.broker import BinanceFuturesBroker, create_binance_broker


def test_every_broker_method_exists_with_the_same_parameters() -> None:
    protocol_methods = {name for name, member in vars(Broker).items() if inspect.isfunction(member) and not name.startswith("_")}
    assert protocol_methods  # the seam is not empty
    for name in protocol_methods:
        live = getattr(BinanceFuturesBroker, name)
        assert inspect.iscoroutinefunction(live), name
        assert list(inspect.signature(live).parameters) == list(inspect.signature(getattr(Broker, name)).parameters), name


def test_factory_signature_is_the_one_the_core_calls() -> None:
    parameters = inspect.signature(create_binance_broker).parameters
    assert list(parameters) == ["api_key", "api_secret", "futures_url", "spot_url", "settings"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
