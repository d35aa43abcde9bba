"""Webhook notifications: users register URLs; TRADE, SAFETY and ERROR events are POSTed, signed."""
