"""What is left of an erased address: a salted hash in the portal's suppression set.

The key is HMAC-SHA256 of the address under the portal's own erasure salt, so it cannot be
reversed by hashing a list of known addresses without the salt, and it means nothing in another
portal. It has no `@`, so it can never be taken for an address.
"""

import hashlib
import hmac

PREFIX = "erased:"


def tombstone_key(salt: str, address: str) -> str:
    return PREFIX + hmac.digest(salt.encode(), address.encode(), hashlib.sha256).hex()


def is_tombstone(subscriber: str) -> bool:
    return subscriber.startswith(PREFIX)
