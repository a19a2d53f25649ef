"""``create_app``: the console as a Starlette application."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .db import migrate_all
from .security import SecurityHeadersMiddleware
from .views import ROUTES
from .web import Console

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"


def _lifespan(
    console: Console,
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            console.pool.close()

    return lifespan


def create_app(db_path: Path, data_dir: Path, *, public_url: str, allowed_hosts: list[str],
               clock: Callable[[], float] = time.time,
               secure_cookies: bool = True) -> Starlette:
    """Build the DSL console over the collector's SQLite store at ``db_path``.

    Applies the core and console migrations, opens its own WAL connections (one per worker
    thread) and rejects requests whose Host header is not in ``allowed_hosts``.
    """
    migrate_all(Path(db_path))
    console = Console(Path(db_path), Path(data_dir), public_url, clock, secure_cookies)
    routes: list[Route | Mount] = [
        Route(path, console.view(handler, **opts), methods=methods)
        for path, handler, methods, opts in ROUTES
    ]
    routes.append(Mount("/static", StaticFiles(directory=STATIC), name="static"))
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeadersMiddleware, hsts=secure_cookies),
            Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts),
        ],
        lifespan=_lifespan(console),
        max_body_size=1_000_000,
    )
    app.state.console = console
    return app
