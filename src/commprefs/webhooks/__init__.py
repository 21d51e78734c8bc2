"""Webhooks: endpoints that are sent every consent change, in feed order, signed (Standard Webhooks).

- `endpoints.py`: registering endpoints, checking where they point, the retry schedule
- `payload.py`: a change as JSON (the one shape of history, feed and webhooks), event types, feed cursors
- `sender.py`: the background sender (leases, retries, delivery log)
- `service.py`: `Webhooks`, the face the admin API and the CLI call
"""

from commprefs.webhooks.payload import EventType
from commprefs.webhooks.service import Webhooks

__all__ = ["EventType", "Webhooks"]
