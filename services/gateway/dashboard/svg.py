"""Charts drawn on the server as inline SVG: no script, no CDN, nothing to download, allowed by a strict CSP.

Only presentation attributes are used (no ``style``), and every text goes through ``html.escape``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 60, 12, 14, 30
ACTION_COLOURS = {"BUY": "#1a7f37", "SELL": "#cf222e", "HOLD": "#8c959f"}


@dataclass(frozen=True)
class Series:
    label: str
    colour: str
    values: Sequence[float | None]   # one per x position; None leaves a gap


def _scale(low: float, high: float) -> tuple[float, float]:
    if high <= low:
        return (low - 1, high + 1) if low == high else (high, low)
    pad = (high - low) * 0.05
    return low - pad, high + pad


def _frame(title: str, body: list[str], low: float, high: float, unit: str, legend: Sequence[tuple[str, str]],
           width: int = WIDTH, height: int = HEIGHT) -> str:
    legend_items, x = [], LEFT
    for label, colour in legend:   # each entry as wide as its text (about 7.5 px a character at 13 px)
        legend_items.append(f'<rect x="{x}" y="{height - 13}" width="11" height="11" fill="{colour}"/>'
                            f'<text x="{x + 15}" y="{height - 3}" font-size="13">{escape(label)}</text>')
        x += 15 + int(7.5 * len(label)) + 18
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" class="chart" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{height - BOTTOM}" stroke="#d0d7de"/>'
        f'<line x1="{LEFT}" y1="{height - BOTTOM}" x2="{width - RIGHT}" y2="{height - BOTTOM}" stroke="#d0d7de"/>'
        f'<text x="{LEFT - 4}" y="{TOP + 8}" font-size="13" text-anchor="end">{_number(high)}{escape(unit)}</text>'
        f'<text x="{LEFT - 4}" y="{height - BOTTOM}" font-size="13" text-anchor="end">{_number(low)}{escape(unit)}</text>'
        + "".join(body) + "".join(legend_items) + "</svg>"
    )


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _xy(index: int, count: int, value: float, low: float, high: float, width: int, height: int) -> tuple[float, float]:
    span = max(count - 1, 1)
    x = LEFT + (width - LEFT - RIGHT) * index / span
    y = height - BOTTOM - (height - TOP - BOTTOM) * (value - low) / (high - low)
    return round(x, 1), round(y, 1)


def line_chart(title: str, series: Sequence[Series], unit: str = "", floor_zero: bool = True,
               labels: Sequence[str] = ()) -> str:
    values = [value for line in series for value in line.values if value is not None]
    if not values:
        return empty_chart(title)
    low, high = (0.0, max(max(values), 1.0)) if floor_zero else _scale(min(values), max(values))
    count = max(len(line.values) for line in series)
    body = []
    for line in series:
        points = [(_xy(index, count, value, low, high, WIDTH, HEIGHT), index) for index, value in enumerate(line.values)
                  if value is not None]
        path = " ".join(f"{x},{y}" for (x, y), _ in points)
        body.append(f'<polyline points="{path}" fill="none" stroke="{line.colour}" stroke-width="2"/>')
        for (x, y), index in points:
            label = labels[index] if index < len(labels) else str(index)
            body.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{line.colour}">'
                        f'<title>{escape(label)}: {escape(line.label)} {line.values[index]:g}{escape(unit)}</title></circle>')
    return _frame(title, body, low, high, unit, [(line.label, line.colour) for line in series])


def stacked_bars(title: str, series: Sequence[Series], labels: Sequence[str] = ()) -> str:
    count = max((len(line.values) for line in series), default=0)
    totals = [sum((line.values[index] or 0) for line in series if index < len(line.values)) for index in range(count)]
    if not count or max(totals) <= 0:
        return empty_chart(title)
    high = max(totals)
    slot = (WIDTH - LEFT - RIGHT) / count
    body = []
    for index in range(count):
        base = 0.0
        for line in series:
            value = (line.values[index] or 0) if index < len(line.values) else 0
            if value <= 0:
                continue
            top = HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * (base + value) / high
            size = (HEIGHT - TOP - BOTTOM) * value / high
            label = labels[index] if index < len(labels) else str(index)
            body.append(f'<rect x="{round(LEFT + slot * index + 1, 1)}" y="{round(top, 1)}" '
                        f'width="{round(max(slot - 2, 1), 1)}" height="{round(size, 1)}" fill="{line.colour}">'
                        f'<title>{escape(label)}: {escape(line.label)} {value:g}</title></rect>')
            base += value
    return _frame(title, body, 0.0, high, "", [(line.label, line.colour) for line in series])


def price_chart(title: str, prices: Sequence[float], actions: Sequence[str], confidences: Sequence[float | None],
                labels: Sequence[str] = ()) -> str:
    """The price at each analysis, each BUY/SELL signal marked (its size grows with its confidence)."""
    if not prices:
        return empty_chart(title)
    low, high = _scale(min(prices), max(prices))
    count = len(prices)
    points = [_xy(index, count, price, low, high, WIDTH, HEIGHT) for index, price in enumerate(prices)]
    body = [f'<polyline points="{" ".join(f"{x},{y}" for x, y in points)}" fill="none" stroke="#0969da" '
            f'stroke-width="1.5"/>']
    for index, ((x, y), action) in enumerate(zip(points, actions, strict=True)):
        confidence = confidences[index]
        if action not in ("BUY", "SELL"):
            continue
        radius = 3 + 5 * max(0.0, min(1.0, (confidence or 0) / 100))
        label = labels[index] if index < len(labels) else str(index)
        body.append(f'<circle cx="{x}" cy="{y}" r="{radius:.1f}" fill="{ACTION_COLOURS[action]}" fill-opacity="0.7" '
                    f'class="signal-{action.lower()}"><title>{escape(label)}: {action} at {prices[index]:g}, '
                    f'confidence {confidence if confidence is not None else "?"}%</title></circle>')
    return _frame(title, body, low, high, "", [("price", "#0969da"), ("BUY signal", ACTION_COLOURS["BUY"]),
                                                ("SELL signal", ACTION_COLOURS["SELL"])])


def reliability_diagram(title: str, points: Sequence[dict[str, float]], size: int = 320) -> str:
    """Stated confidence (x) against observed win rate (y), 50-100 % by 0-100 %; Wilson intervals as bars."""
    def to_xy(confidence: float, rate: float) -> tuple[float, float]:
        x = LEFT + (size - LEFT - RIGHT) * (confidence - 0.5) / 0.5
        y = size - BOTTOM - (size - TOP - BOTTOM) * rate
        return round(x, 1), round(y, 1)

    (x0, y0), (x1, y1) = to_xy(0.5, 0.5), to_xy(1.0, 1.0)
    body = [f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#8c959f" stroke-dasharray="4 3"/>']
    for point in points:
        x, y = to_xy(point["confidence"], point["winRate"])
        _, low_y = to_xy(point["confidence"], point["low"])
        _, high_y = to_xy(point["confidence"], point["high"])
        body.append(f'<line x1="{x}" y1="{low_y}" x2="{x}" y2="{high_y}" stroke="#0969da"/>'
                    f'<circle cx="{x}" cy="{y}" r="4" fill="#0969da" class="reliability-point">'
                    f'<title>confidence {point["confidence"]:.0%}: won {point["winRate"]:.0%} of {point["trades"]:g} '
                    f'trades (95 % {point["low"]:.0%}-{point["high"]:.0%})</title></circle>')
    return _frame(title, body, 0.0, 100.0, "%", [("observed win rate", "#0969da"), ("calibrated", "#8c959f")],
                  width=size, height=size)


def empty_chart(title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} 60" role="img" class="chart empty" '
            f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
            f'<text x="{LEFT}" y="34" font-size="14" fill="#57606a">No data yet</text></svg>')
