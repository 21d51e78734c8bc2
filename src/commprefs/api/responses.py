"""JSON responses encoded with orjson."""

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

_CONTENT_TYPE = (b"content-type", b"application/json")


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        """Starlette's headers of a JSON body (its length and type), made directly when there are no others."""
        if headers is None and self.status_code >= 200 and self.status_code not in (204, 304):
            self.raw_headers = [(b"content-length", str(len(self.body)).encode("latin-1")), _CONTENT_TYPE]
        else:
            super().init_headers(headers)
