"""Hypothesis strategies for the request messages of the three gRPC services.

Built field by field from the protos: every string may be empty, unicode or
huge, every number negative or enormous, every double NaN/inf/-0.0, every
decimal string junk ("NaN", "-1", "1e309", "abc", ""). To also reach the code
behind validation, each generator mixes in mostly-valid values (a real symbol,
a real interval, a plausible candle series with a few mutated entries).
"""

from __future__ import annotations

from hypothesis import strategies as st

from tests.executor import builders
from tests.strategy import candle_factory
from tradebot.v1 import common_pb2, executor_pb2, market_pb2, strategy_pb2

INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
HUGE_TEXT = st.integers(min_value=10_000, max_value=200_000).map(lambda n: "A" * n)

any_text = st.one_of(st.just(""), st.text(max_size=40), HUGE_TEXT, st.sampled_from([" ", "\x00", "BTC/USDT", "ÄÖÜ€", "btcusdt"]))
# Weighted towards real symbols and intervals so requests also get past validation.
symbols = st.one_of(st.just("BTCUSDT"), st.just("ETHUSDT"),
                    st.sampled_from(["NOSUCHUSDT", "", "btcusdt", " BTCUSDT", "BTCUSDT\n"]), any_text)
intervals = st.one_of(st.just("5m"), st.sampled_from(["1m", "15m", "1h", "4h", "1d", "1w", "1M"]),
                      st.sampled_from(["7m", "", "5M", " 5m"]), any_text)
doubles = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 50.0, 100.0, 100.0000001, -1e-9]),
)
decimal_text = st.one_of(
    st.sampled_from(["NaN", "nan", "sNaN", "-1", "0", "-0", "1e309", "1E+999999", "1e-999999", "Infinity", "-inf",
                     "abc", "", " ", "1_000", "0x10", "50000", "0.001", "1e-30", "1e-400", "1e400"]),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats().map(repr),
    any_text,
)


def sometimes(draw: st.DrawFn, valid: object, junk: st.SearchStrategy, one_in: int = 4) -> object:
    """A generated value once in ``one_in`` draws, else the valid one: requests get deep, every field gets fuzzed."""
    return draw(junk) if draw(st.integers(min_value=1, max_value=one_in)) == 1 else valid


def rarely(draw: st.DrawFn, valid: object, junk: st.SearchStrategy) -> object:
    """For messages with ~25 fields: junk in one field in twelve still lets some requests through validation."""
    return sometimes(draw, valid, junk, one_in=12)


# -- market ----------------------------------------------------------------
@st.composite
def get_candles_requests(draw: st.DrawFn) -> market_pb2.GetCandlesRequest:
    return market_pb2.GetCandlesRequest(
        symbol=sometimes(draw, "BTCUSDT", symbols),
        interval=sometimes(draw, draw(st.sampled_from(["1m", "5m", "1h", "1d", "1w", "1M"])), intervals),
        limit=sometimes(draw, draw(st.integers(min_value=0, max_value=1500)),
                        st.one_of(st.integers(min_value=-2, max_value=1502), INT32)),
        include_open=draw(st.booleans()),
    )
get_price_requests = st.builds(market_pb2.GetPriceRequest, symbol=st.one_of(st.just("BTCUSDT"), symbols))
get_symbol_filters_requests = st.builds(market_pb2.GetSymbolFiltersRequest, symbol=st.one_of(st.just("ETHUSDT"), symbols))
get_stats_requests = st.just(market_pb2.GetStatsRequest())


# -- candles (strategy and executor) ---------------------------------------
CANDLE_PRICE_FIELDS = ("open", "high", "low", "close", "volume")

random_candles = st.lists(
    st.builds(
        common_pb2.Candle,
        open_time_ms=INT64,
        close_time_ms=INT64,
        open=decimal_text,
        high=decimal_text,
        low=decimal_text,
        close=decimal_text,
        volume=decimal_text,
        closed=st.booleans(),
    ),
    max_size=8,
)


@st.composite
def plausible_candles(draw: st.DrawFn) -> list[common_pb2.Candle]:
    """A valid trending series of 0..260 candles, then up to three mutations (bad value, reorder, open flag)."""
    count = draw(st.one_of(st.integers(min_value=0, max_value=260), st.integers(min_value=200, max_value=260)))
    seed = draw(st.integers(min_value=0, max_value=5))
    closes = candle_factory.trending_closes(count, 50_000.0, draw(st.sampled_from([-0.2, 0.0, 0.2])), 0.5, seed)
    candles = candle_factory.candles_from_closes(closes) if count else []
    for _ in range(draw(st.integers(min_value=0, max_value=3)) if candles else 0):
        index = draw(st.integers(min_value=0, max_value=len(candles) - 1))
        mutation = draw(st.sampled_from(["value", "swap", "open", "time"]))
        if mutation == "value":
            setattr(candles[index], draw(st.sampled_from(CANDLE_PRICE_FIELDS)), draw(decimal_text))
        elif mutation == "swap":
            other = draw(st.integers(min_value=0, max_value=len(candles) - 1))
            candles[index], candles[other] = candles[other], candles[index]
        elif mutation == "open":
            candles[index].closed = False
        else:
            candles[index].open_time_ms = draw(INT64)
    return candles


candle_lists = st.one_of(plausible_candles(), random_candles)


# -- strategy --------------------------------------------------------------
PARAM_NAMES = ["min_score", "rsi_oversold", "rsi_overbought", "leverage", "", "é"]
junk_params = st.dictionaries(st.one_of(st.sampled_from(PARAM_NAMES), st.text(max_size=10)), doubles, max_size=3)


def sometimes_one_in_8(draw: st.DrawFn, valid: object, junk: st.SearchStrategy) -> object:
    return sometimes(draw, valid, junk, one_in=8)


@st.composite
def analyze_requests(draw: st.DrawFn) -> strategy_pb2.AnalyzeRequest:
    return strategy_pb2.AnalyzeRequest(
        bot_id=sometimes_one_in_8(draw, draw(st.integers(min_value=1, max_value=4)), st.one_of(st.integers(-1, 6), INT32)),
        symbol=sometimes_one_in_8(draw, "BTCUSDT", symbols),
        interval=sometimes_one_in_8(draw, "5m", intervals),
        candles=draw(st.one_of(plausible_candles(), plausible_candles(), plausible_candles(), random_candles)),
        params=sometimes_one_in_8(draw, {}, junk_params),
        use_ai=draw(st.booleans()),
    )


list_strategies_requests = st.just(strategy_pb2.ListStrategiesRequest())


# -- executor --------------------------------------------------------------
def bot_config(draw: st.DrawFn) -> executor_pb2.BotConfig:
    valid = builders.config()
    return executor_pb2.BotConfig(
        leverage=rarely(draw, valid.leverage, st.one_of(st.integers(min_value=-1, max_value=130), INT32)),
        stop_loss_percent=rarely(draw, valid.stop_loss_percent, decimal_text),
        take_profit_percent=rarely(draw, valid.take_profit_percent, decimal_text),
        position_size_percent=rarely(draw, valid.position_size_percent, decimal_text),
        max_daily_loss=rarely(draw, valid.max_daily_loss, decimal_text),
        confidence_threshold=rarely(draw, valid.confidence_threshold, doubles),
        max_consecutive_losses=rarely(draw, valid.max_consecutive_losses, INT32),
        max_position_notional=rarely(draw, valid.max_position_notional, decimal_text),
        interval=rarely(draw, valid.interval, intervals),
        margin_type=rarely(draw, valid.margin_type, st.one_of(st.sampled_from(["CROSSED", "crossed", ""]), any_text)),
    )


signals = st.builds(
    common_pb2.Signal,
    action=st.one_of(st.sampled_from([0, 1, 2, 3]), INT32),
    confidence=st.one_of(st.sampled_from([80.0, 95.0]), doubles),
    reason=any_text,
)

positions = st.builds(
    executor_pb2.Position,
    symbol=symbols,
    side=st.one_of(st.sampled_from([0, 1, 2]), INT32),
    entry_price=decimal_text,
    quantity=decimal_text,
    leverage=INT32,
    stop_loss=st.one_of(st.just("49000"), decimal_text),
    take_profit=st.one_of(st.just("52000"), decimal_text),
    open_time_ms=INT64,
)


def bot_ref(draw: st.DrawFn, user_id: str, connection_id: str) -> executor_pb2.BotRef:
    """Mostly the paper user's bot (so calls run past validation), sometimes strangers and junk ids."""
    return executor_pb2.BotRef(
        bot_instance_id=rarely(draw, "6650f0f0f0f0f0f0f0f0f0f0", any_text),
        user_id=rarely(draw, user_id, st.one_of(st.just("6650f0f0f0f0f0f0f0f0f0f1"), any_text)),
        bot_id=draw(st.one_of(st.just(1), INT32)),
        bot_name=draw(any_text),
        symbol=rarely(draw, "BTCUSDT", symbols),
        exchange_connection_id=sometimes(
            draw, draw(st.sampled_from(["", connection_id])), st.one_of(st.just("6650f0f0f0f0f0f0f0f0f0f2"), any_text)
        ),
    )


@st.composite
def run_cycle_requests(draw: st.DrawFn, user_id: str, connection_id: str) -> executor_pb2.RunCycleRequest:
    """Mostly what the gateway sends (the stored bot, a tick, a signal); sometimes statements of the
    bot's config, statistics or position, which must match the stored bot or be refused."""
    message = executor_pb2.RunCycleRequest(
        tick_id=rarely(draw, draw(st.text(alphabet="abcdef0123456789-", min_size=1, max_size=20)), any_text),
        bot=bot_ref(draw, user_id, connection_id),
    )
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        message.config.CopyFrom(bot_config(draw))
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        message.statistics.CopyFrom(executor_pb2.BotStatistics(consecutive_losses=rarely(draw, 0, INT32)))
    if draw(st.integers(min_value=0, max_value=3)):
        message.signal.CopyFrom(rarely(draw, common_pb2.Signal(action=draw(st.sampled_from([1, 2, 3])),
                                                                  confidence=90.0, reason="fuzz"), signals))
    if draw(st.integers(min_value=0, max_value=7)) == 0:
        message.stored_position.CopyFrom(draw(positions))
    return message


@st.composite
def get_position_requests(draw: st.DrawFn, user_id: str, connection_id: str) -> executor_pb2.GetPositionRequest:
    return executor_pb2.GetPositionRequest(bot=bot_ref(draw, user_id, connection_id))
