"""Per-process cache of each portal's settings and definitions, read on every status call.

Changes made through this process invalidate their portal at once (when written and again
after commit); changes made by another process (the CLI, another API worker) are seen within
`ttl` seconds.
"""

import threading
import time

from commprefs.domain.model import Definition, Portal

Snapshot = tuple[Portal | None, tuple[Definition, ...]]


class PortalCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[int, tuple[float, Snapshot]] = {}
        self._generations: dict[int, int] = {}
        self._lock = threading.Lock()

    def generation(self, portal_id: int) -> int:
        """Read before loading a snapshot; `put` drops it if the portal was invalidated meanwhile."""
        return self._generations.get(portal_id, 0)

    def get(self, portal_id: int) -> Snapshot | None:
        entry = self._entries.get(portal_id)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, portal_id: int, snapshot: Snapshot, generation: int) -> None:
        if self.ttl > 0:
            with self._lock:
                if self._generations.get(portal_id, 0) == generation:
                    self._entries[portal_id] = (time.monotonic() + self.ttl, snapshot)

    def invalidate(self, portal_ids: set[int]) -> None:
        with self._lock:
            for portal_id in portal_ids:
                self._entries.pop(portal_id, None)
                self._generations[portal_id] = self._generations.get(portal_id, 0) + 1
