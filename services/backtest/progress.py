"""A plain-text progress bar on stderr (no dependency; redrawn at most every 0.2 s)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30
MIN_REDRAW_SECONDS = 0.2


class ProgressBar:
    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self._label = label
        self._stream = stream if stream is not None else sys.stderr
        self._shown = -1
        self._started = time.monotonic()
        self._last_draw = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        finished = done >= total
        if not finished and (now - self._last_draw < MIN_REDRAW_SECONDS or done == self._shown):
            return
        self._shown, self._last_draw = done, now
        filled = done * WIDTH // total if total else WIDTH
        elapsed = now - self._started
        self._stream.write(f"\r{self._label} [{'#' * filled}{'.' * (WIDTH - filled)}] "
                           f"{done * 100 // max(total, 1):3d}% {done}/{total} steps {elapsed:5.1f}s")
        if finished:
            self._stream.write("\n")
        self._stream.flush()
