"""The portal cache: fresh entries are served, invalidation wins over a load that raced with it."""

import time

from commprefs.domain.model import Portal
from commprefs.store.cache import PortalCache

PORTAL = Portal(1, "p", False, False, "en", None)


def test_entries_expire_and_invalidate() -> None:
    cache = PortalCache(ttl=0.05)
    cache.put(1, (PORTAL, ()), cache.generation(1))
    assert cache.get(1) == (PORTAL, ())
    cache.invalidate({1})
    assert cache.get(1) is None
    cache.put(1, (PORTAL, ()), cache.generation(1))
    time.sleep(0.06)
    assert cache.get(1) is None


def test_a_load_that_raced_with_an_invalidation_is_not_stored() -> None:
    cache = PortalCache(ttl=60)
    generation = cache.generation(1)  # a reader starts loading the old state...
    cache.invalidate({1})  # ...a writer commits a change meanwhile...
    cache.put(1, (PORTAL, ()), generation)  # ...the reader's stale snapshot must not be kept
    assert cache.get(1) is None


def test_zero_ttl_caches_nothing() -> None:
    cache = PortalCache(ttl=0)
    cache.put(1, (PORTAL, ()), cache.generation(1))
    assert cache.get(1) is None
