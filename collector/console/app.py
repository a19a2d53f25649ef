"""``create_app``: the console as a Starlette application over a store."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .db import open_console_store
from .security import SecurityHeadersMiddleware
from .views import ROUTES
from .web import Console

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"


def _lifespan(
    console: Console, opener: Callable[[], Any] | None,
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    """Close a store the app opened itself when its last server stops (and open it again if
    a server starts after that); a store passed in belongs to the caller."""
    running = 0

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        nonlocal running
        if opener is not None and console.store is None:
            console.use_store(opener())
        running += 1
        try:
            yield
        finally:
            running -= 1
            if opener is not None and running == 0 and console.store is not None:
                console.store.close()
                console.use_store(None)

    return lifespan


def create_app(db_path: Path | None = None, data_dir: Path | None = None, *,
               public_url: str, allowed_hosts: list[str], store: Any = None,
               clock: Callable[[], float] = time.time, secure_cookies: bool = True,
               trusted_proxies: list[str] | None = None, smtp: Any = None) -> Starlette:
    """Build the DSL console.

    Either over ``store`` (any store with the console repositories and ``audit()``: a
    SqliteStore or PostgresStore; the caller closes it), or over the SQLite store at
    ``db_path`` (migrations applied, opened here and closed at shutdown). ``data_dir`` holds
    the screenshots. Requests whose Host header is not in ``allowed_hosts`` are refused;
    X-Forwarded-For is believed only from ``trusted_proxies`` (addresses or networks).
    ``smtp`` (collector.config.SmtpConfig) lets the console email four-eyes approvers.
    """
    opener: Callable[[], Any] | None = None
    if store is None:
        if db_path is None:
            raise ValueError("create_app: pass db_path or store")
        path, data = Path(db_path), Path(data_dir) if data_dir else None
        opener = lambda: open_console_store(path, data)  # noqa: E731
        store = opener()
    if data_dir is None:
        data_dir = Path(getattr(store, "data_dir", None) or Path(db_path or ".").parent)
    console = Console(store, Path(data_dir), public_url, clock, secure_cookies,
                      trusted_proxies, smtp=smtp)
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
        lifespan=_lifespan(console, opener),
        max_body_size=1_000_000,
    )
    app.state.console = console
    return app
