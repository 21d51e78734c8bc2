"""The ASGI application: routers for every API version, error handlers, health and metrics."""

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from commprefs import __version__, metrics
from commprefs.api import admin, history, openapi, records, transfer, v3, v4, webhook_admin
from commprefs.api.auth import TokenCache
from commprefs.api.errors import error_response, install_error_handlers
from commprefs.api.idempotency import purge_expired_keys
from commprefs.api.pipeline import Pipeline
from commprefs.api.ratelimit import limiter_for
from commprefs.api.responses import JSON
from commprefs.config import Settings, get_settings
from commprefs.pages import views as pages
from commprefs.pages.mailer import Mailer
from commprefs.pages.ratelimit import SlidingWindow
from commprefs.services import Services
from commprefs.store import Store
from commprefs.store.ratelimit import counter_for
from commprefs.webhooks import sender

# Collect cyclic garbage every this many allocations (CPython's default, 700, ran a collection every
# few requests; with the default, a v4 write's p99 was five times its p50, with this 1.5 times).
GC_THRESHOLDS = (100_000, 50, 100)


def calm_garbage_collector() -> None:
    """What startup built (routes, models, compiled statements) lives as long as the process: move it
    out of the collector's sight (gc.freeze), and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class App(FastAPI):
    """FastAPI for declaring routes, building the document and running the lifespan; every HTTP request
    takes the one lean path of api/pipeline.py instead of FastAPI's middleware stack and router."""

    pipeline: Pipeline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.pipeline(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def add_routes(self, router: APIRouter) -> None:
        """`router`'s routes as the app's own (their paths carry the router's prefix): one flat list, which
        the pipeline indexes, instead of FastAPI's nested included routers."""
        self.router.routes.extend(router.routes)


def create_app(settings: Settings | None = None, store: Store | None = None) -> App:
    """The app for `settings`; a given `store` is used as is and left open on shutdown."""
    settings = settings or get_settings()
    owns_store = store is None
    app_store = store or Store(settings.database_url, settings.cache_seconds)
    services = Services(app_store)
    rate_limiter = limiter_for(settings, lambda policies: counter_for(policies, settings.database_url))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        calm_garbage_collector()
        purge = asyncio.create_task(purge_expired_keys(services.consent))
        async with contextlib.AsyncExitStack() as stack:
            if settings.webhooks:
                await stack.enter_async_context(sender.running(app_store, settings))
            yield
        app.pipeline.flush()
        purge.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await purge
        if rate_limiter is not None:
            await rate_limiter.aclose()
        if owns_store:
            app_store.close()

    app = App(
        title="commprefs",
        version=__version__,
        description="HubSpot's Communication Preferences API, self-hosted.",
        lifespan=lifespan,
    )
    app.state.store = app_store
    app.state.services = services
    app.state.settings = settings
    app.state.tokens = TokenCache(services.tenancy, settings.token_cache_seconds)
    app.state.rate_limiter = rate_limiter
    app.state.mailer = Mailer(settings)
    app.state.link_request_limits = {
        "address": SlidingWindow(settings.link_requests_per_address),
        "ip": SlidingWindow(settings.link_requests_per_ip),
    }
    install_error_handlers(app)
    openapi.install(app)
    app.pipeline = Pipeline(
        app,
        max_body_bytes=settings.max_body_bytes,
        log_pii=settings.log_pii,
        large_bodies={records.IMPORTS_PATH: settings.import_max_bytes},
    )

    base = "/communication-preferences"
    app.add_routes(v3.router(f"{base}/v3", with_definitions=True, with_bulk=True))
    app.add_routes(v4.router(f"{base}/v4"))
    # The dated versions serve the same handlers: 2026-03 carries v4; 2025-09 and 2026-09 add
    # the v3-shaped status operations and resubscribe (which v3 itself serves too, as its 2024-03-18 document did).
    app.add_routes(v4.router(f"{base}/2026-03"))
    for version in ("2025-09", "2026-09"):
        app.add_routes(v4.router(f"{base}/{version}"))
        app.add_routes(v3.router(f"{base}/{version}", with_definitions=False))
    app.add_routes(admin.router)
    app.add_routes(history.router)
    app.add_routes(webhook_admin.router)
    app.add_routes(transfer.router)
    app.add_routes(pages.router())

    @app.get("/robots.txt", include_in_schema=False)
    async def robots() -> Response:
        return Response("User-agent: *\nDisallow: /preferences/\n", media_type="text/plain")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Any:
        return JSON({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Any:
        try:
            await services.tenancy.ready()
        except Exception:
            return error_response(request, 503, "The database is unavailable")
        return JSON({"status": "ok"})

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app
