"""Time as the store keeps it: integer milliseconds since the epoch, UTC."""

import time
from datetime import UTC, datetime
from functools import lru_cache


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@lru_cache(maxsize=8192)  # batches format the same few instants thousands of times
def iso(ms: int) -> str:
    """HubSpot's timestamp form: ISO-8601, UTC, milliseconds, `Z`."""
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
