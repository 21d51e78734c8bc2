"""Tenancy: portals, their brands, subscription definitions and API tokens.

- `setup.py`: the rules of setting a portal up (ids, default definitions, unique names, token secrets)
- `service.py`: `Tenancy`, the face the admin API, the CLI and authentication call
"""

from commprefs.tenancy.service import Tenancy
from commprefs.tenancy.setup import TOKEN_PREFIX, hash_token

__all__ = ["TOKEN_PREFIX", "Tenancy", "hash_token"]
