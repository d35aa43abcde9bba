"""What the reliability tests observed, summed for the line printed at the end of the run.

Each test records the faults it caused and what it then checked in the database
and on the exchange; the numbers in the summary are counted, never assumed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Ledger:
    faults_injected: int = 0
    writes_checked: int = 0
    writes_lost: int = 0
    orders_checked: int = 0
    duplicate_orders: int = 0
    faults: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fault(self, description: str) -> None:
        with self._lock:
            self.faults_injected += 1
            self.faults.append(description)

    def writes(self, checked: int, lost: int) -> None:
        with self._lock:
            self.writes_checked += checked
            self.writes_lost += lost

    def orders(self, checked: int, duplicates: int) -> None:
        with self._lock:
            self.orders_checked += checked
            self.duplicate_orders += duplicates

    def summary(self) -> str:
        return (
            f"reliability: {self.faults_injected} faults injected, {self.writes_lost} writes lost "
            f"(of {self.writes_checked} checked), {self.duplicate_orders} duplicate orders "
            f"(of {self.orders_checked} order slots checked)"
        )


LEDGER = Ledger()
