"""The thin web layer: request context, the view wrapper (auth, CSRF, permission, audit of
refusals) and template rendering. Views live in views.py; every decision is a service's."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from collector.services.accounts import AccountsService, BadInput, Refused, Session, User
from collector.services.audit import AuditLog
from collector.services.audit_view import AuditViewService
from collector.services.casework import CaseworkService
from collector.services.dashboard import DashboardService
from collector.services.estate import EstateService
from collector.services.exports import ExportsService
from collector.services.notifications import Mailer, NotificationsService
from collector.services.pupils import PupilService
from collector.services.queue import QueueService
from collector.services.reports import ReportsService
from collector.services.roster import RosterService
from collector.services.technician import TechnicianService

from .auth import Proxies, client_address
from .i18n import LANGUAGES, Translate, best_language, lead_namer, translator
from .labels import show_bidi
from .security import csrf_ok, origin_ok

__all__ = ["Console", "Ctx", "Handler", "Services"]

TEMPLATES = Path(__file__).parent / "templates"


class Services:
    """The application services the console's views call, over one store and clock."""

    def __init__(self, store: Any, clock: Callable[[], float],
                 mailer: Mailer | None = None) -> None:
        self.audit = AuditLog(store, clock)
        self.accounts = AccountsService(store, clock, self.audit)
        self.casework = CaseworkService(store, clock, self.accounts, self.audit)
        self.queue = QueueService(store, clock, self.accounts)
        self.pupils = PupilService(store, clock, self.accounts)
        self.exports = ExportsService(store, clock, self.accounts)
        self.reports = ReportsService(store, clock, self.accounts, self.audit)
        self.roster = RosterService(store, clock, self.accounts, self.audit)
        self.notifications = NotificationsService(store, clock, self.accounts)
        self.audit_view = AuditViewService(store, clock, self.accounts, self.audit)
        self.casework.mailer = mailer  # four-eyes emails to approvers and requesters
        self.dashboard = DashboardService(store, clock, self.accounts)
        self.technician = TechnicianService(
            store, EstateService(store, lambda: int(clock() * 1000)), clock, self.accounts)


@dataclass
class Ctx:
    """What a view gets: the request, its parsed form, the services, the time and the user."""

    console: Console
    request: Request
    form: dict[str, str]
    services: Services
    now_ms: int
    session: Session | None
    cookies_to_set: list[tuple[str, str, int | None]] = field(default_factory=list)

    @property
    def user(self) -> User:
        assert self.session is not None
        return self.session.user

    @property
    def ip(self) -> str:
        peer = self.request.client.host if self.request.client else ""
        return client_address(peer, self.request.headers.getlist("x-forwarded-for"),
                              self.console.proxies)

    def audit(self, action: str, target: str = "", site_id: str | None = None,
              **detail: Any) -> None:
        actor = self.session.user.username if self.session else "anonymous"
        self.services.audit.record(actor, action, target, site_id, now_ms=self.now_ms,
                                   **detail)

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return self.console.render(self, template, status, **values)

    @property
    def tr(self) -> Translate:
        """The page's translator, for text a view builds (chart labels)."""
        return translator(self.console.language(self))


Handler = Callable[[Ctx], Response]


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}`` of every template: bidi controls shown, never obeyed. (On
    already-escaped Markup, ``str.translate`` keeps it Markup: nothing is escaped twice.)"""
    return show_bidi(value) if isinstance(value, str) else value


class Console:
    def __init__(self, store: Any, data_dir: Path, public_url: str,
                 clock: Callable[[], float], secure_cookies: bool,
                 trusted_proxies: list[str] | None = None, smtp: Any = None) -> None:
        self.clock = clock
        self.mailer = Mailer(smtp, public_url) if smtp is not None and smtp.host else None
        self.use_store(store)
        self.data_dir = data_dir
        self.public_url = public_url.rstrip("/")
        self.clock = clock
        self.secure = secure_cookies
        self.proxies = Proxies(trusted_proxies or [])
        self.session_cookie = "__Host-vigil_session" if secure_cookies else "vigil_session"
        self.login_cookie = "__Host-vigil_login" if secure_cookies else "vigil_login"
        self.device_cookie = "__Host-vigil_device" if secure_cookies else "vigil_device"
        self.static_version = secrets.token_hex(4)
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                                      autoescape=True, undefined=jinja2.StrictUndefined,
                                      finalize=_finalize)

    def use_store(self, store: Any) -> None:
        """Work on ``store`` from now on (None: closed until a server starts again)."""
        self.store = store
        self.services = Services(store, self.clock, self.mailer)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def render(self, ctx: Ctx, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        session = ctx.session
        lang = self.language(ctx)
        _ = translator(lang)
        accounts = self.services.accounts
        wales: list[frozenset[str]] = []

        def lead(site: str | None = None, long: bool = False, role: str | None = None) -> str:
            """The safeguarding lead's title at a site (DSL, or DSP in Wales), translated."""
            if not wales:  # one query, and only for pages that name the role
                wales.append(frozenset(accounts.wales_sites()))
            return lead_namer(_, wales[0], session.user.sites if session else ())(
                site, long, role)

        notes = self.services.notifications
        # called by base.html only, so fragments (the queue's polled rows) cost nothing
        badge: Callable[[], int] = (lambda: notes.badge(session.user)) if session else (
            lambda: 0)
        no_contacts: Callable[[], list[dict[str, Any]]] = (
            (lambda: notes.sites_without_contacts(session.user)) if session else (lambda: []))
        html = self.env.get_template(template).render(
            notice_badge=badge, sites_without_contacts=no_contacts,
            user=session.user if session else None, csrf=session.csrf if session else "",
            v=self.static_version, path=ctx.request.url.path, lang=lang,
            languages=LANGUAGES, lead=lead, _=_, **values)
        return HTMLResponse(html, status_code=status)

    def language(self, ctx: Ctx) -> str:
        """The language a page is shown in: the user's own; before log-in, ``?lang=`` or the
        browser's Accept-Language (Welsh when it prefers cy to en)."""
        if ctx.session is not None:
            lang = ctx.session.user.language
            return lang if lang in LANGUAGES else "en"
        asked = ctx.request.query_params.get("lang", "")
        if asked in LANGUAGES:
            return asked
        return best_language(ctx.request.headers.get("accept-language", ""))

    def set_cookie(self, response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", secure=self.secure,
                            httponly=True, samesite="strict")

    def view(self, handler: Handler, *, permission: str | None = None,
             login: bool = True) -> Callable[[Request], Any]:
        """Wrap a blocking view: parse the form, then run checks and the view in a thread."""

        async def endpoint(request: Request) -> Response:
            form: dict[str, str] = {}
            if request.method == "POST":
                try:
                    # a bulk submit carries one field per selected queue item
                    data = await request.form(max_files=0, max_fields=260)
                except Exception:  # malformed body: refuse plainly, never a traceback
                    return PlainTextResponse("Bad form data.", status_code=400)
                form = {k: v for k, v in data.items() if isinstance(v, str)}
                # repeated fields (the queue's selected items), for views that read lists
                request.state.form_lists = {
                    k: [v for v in data.getlist(k) if isinstance(v, str)] for k in data}
            return await run_in_threadpool(self._run, handler, request, form, permission, login)

        return endpoint

    def _run(self, handler: Handler, request: Request, form: dict[str, str],
             permission: str | None, login: bool) -> Response:
        now = self.now_ms()
        session = self.services.accounts.session(request.cookies.get(self.session_cookie))
        ctx = Ctx(self, request, form, self.services, now, session)
        if login and session is None:
            if request.method == "GET":
                return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
            return PlainTextResponse("Log in first.", status_code=401)
        if request.method == "POST" and session is not None and login:
            given = form.get("csrf") or request.headers.get("x-csrf-token")
            if not csrf_ok(session.csrf, given) or not origin_ok(
                    request.headers.get("origin"), request.headers.get("host")):
                ctx.audit("csrf.refused", request.url.path)
                return ctx.render("error.html", 403, message="This form has expired. "
                                  "Go back, reload the page and try again.")
        if permission and session is not None and not session.user.can(permission):
            ctx.audit("access.refused", request.url.path, None, permission=permission,
                      role=session.user.role)
            return ctx.render("error.html", 403, message="Your role cannot open this page.")
        try:
            return handler(ctx)
        except Refused as e:
            ctx.audit("access.refused", request.url.path, e.site_id, reason=e.reason)
            msg = "Not found." if e.status == 404 else "You are not allowed to see this."
            return ctx.render("error.html", e.status, message=msg)
        except BadInput as e:
            return ctx.render("error.html", 400, message=str(e))
