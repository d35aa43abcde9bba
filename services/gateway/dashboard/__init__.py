"""The operators' dashboard, served by the gateway at ``/dashboard`` (offline: its assets ship here)."""
