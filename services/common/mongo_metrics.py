"""Counts and times every MongoDB command a service sends, for Prometheus.

One ``pymongo`` command listener, handed to each ``AsyncMongoClient`` the
services build (``event_listeners=[COMMAND_LISTENER]``). It makes the
database's share of a tick visible on a real deployment, and lets the
benchmark count round trips on the wire instead of deriving them from the
code. Labels are the command name and the collection: both small fixed sets.
"""

from __future__ import annotations

from typing import Any

from pymongo import monitoring

from services.common.metrics import MONGO_COMMAND_SECONDS, MONGO_COMMANDS_TOTAL


def _collection(event: monitoring.CommandStartedEvent) -> str:
    # find/insert/update/... name their collection in the command's first field; ping, hello and
    # endSessions carry a number or a list there, and getMore names it in "collection".
    key = "collection" if event.command_name == "getMore" else event.command_name
    value: Any = event.command.get(key)
    return value if isinstance(value, str) else ""


class CommandMetrics(monitoring.CommandListener):
    """Started events count by (command, collection); finished ones time by command."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        MONGO_COMMANDS_TOTAL.labels(command=event.command_name, collection=_collection(event)).inc()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        MONGO_COMMAND_SECONDS.labels(command=event.command_name).observe(event.duration_micros / 1e6)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        MONGO_COMMAND_SECONDS.labels(command=event.command_name).observe(event.duration_micros / 1e6)


COMMAND_LISTENER = CommandMetrics()
