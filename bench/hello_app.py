"""Hello-world baseline for bench/run.py: FastAPI under uvicorn with the same settings as `commprefs serve`."""

import argparse

import orjson
import uvicorn
from fastapi import FastAPI
from starlette.responses import Response

from commprefs.logs import log_config

BODY = orjson.dumps({"hello": "world"})


def create_app() -> FastAPI:
    app = FastAPI(title="hello")

    @app.get("/hello")
    async def hello() -> Response:
        return Response(BODY, media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    # Mirrors the uvicorn.run call in commprefs.cli.serve: one process, same logging, no access log.
    uvicorn.run(
        create_app,
        factory=True,
        host=args.host,
        port=args.port,
        workers=1,
        log_config=log_config(args.log_level),
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
