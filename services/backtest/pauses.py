"""What happens to a bot that a safety rule paused, in simulated time.

Live, a PAUSED bot is skipped by every tick until a user resumes it. A
backtest has no user, so it follows a fixed, documented policy:

- DAILY_LOSS: resumes at the first step of the next UTC day (the daily loss
  starts again from zero then; the position was already closed by the rule).
- CONSECUTIVE_LOSSES: stays paused to the end of the backtest by default,
  like a bot nobody resumed. With ``resume_after_losses="next-day"`` it
  resumes at the next UTC day with the streak reset, as
  ``tradebot bot resume --reset-losses`` would.
- POSITION_SIZE (and any other rule): stays paused; a human decides.

While paused, the exchange still works: an open position's stop-loss and
take-profit keep triggering on candle high/low; the closed trade is booked
by the first cycle after the pause, exactly as live.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DAY_MS = 86_400_000
ResumeAfterLosses = Literal["never", "next-day"]


@dataclass(frozen=True)
class Pause:
    rule: str
    since_ms: int
    resume_at_ms: int | None        # None: paused to the end
    reset_losses: bool = False


def next_utc_midnight_ms(now_ms: int) -> int:
    return (now_ms // DAY_MS + 1) * DAY_MS


def pause_for(rule: str, now_ms: int, resume_after_losses: ResumeAfterLosses) -> Pause:
    if rule == "DAILY_LOSS":
        return Pause(rule, now_ms, next_utc_midnight_ms(now_ms))
    if rule == "CONSECUTIVE_LOSSES" and resume_after_losses == "next-day":
        return Pause(rule, now_ms, next_utc_midnight_ms(now_ms), reset_losses=True)
    return Pause(rule, now_ms, None)
