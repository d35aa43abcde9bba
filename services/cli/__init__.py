"""The ``tradebot`` command line: users, bots, connections, logs, ticks, status, webhooks."""
