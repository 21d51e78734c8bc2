"""Hello-world apps for the HTTP ceiling, served by uvicorn with the same settings as `commprefs serve`.

`bare` is a plain ASGI callable (no framework at all): the ceiling. `fastapi` is the same answer through
FastAPI, an informative extra row. Either answers every path with a small JSON body.
"""

import argparse
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.responses import Response

from commprefs.logs import log_config

BODY = b'{"hello":"world"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A plain ASGI app: 200 and BODY for every HTTP request; lifespan events acknowledged."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def create_fastapi() -> FastAPI:
    app = FastAPI(title="hello")

    @app.get("/{path:path}")
    async def hello(path: str) -> Response:
        return Response(BODY, media_type="application/json")

    return app


APPS = {"bare": ("hello_app:bare", False), "fastapi": ("hello_app:create_fastapi", True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--app", choices=sorted(APPS), default="bare")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    target, factory = APPS[args.app]
    # Mirrors the uvicorn.run call in commprefs.cli.serve (loop and http left to uvicorn's "auto", which
    # picks uvloop and httptools when installed; same logging, no access log, no server header).
    uvicorn.run(
        target,
        factory=factory,
        app_dir=str(Path(__file__).resolve().parent),
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=log_config(args.log_level),
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
