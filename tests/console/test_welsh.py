"""Wales (issue 14): the whole console in Welsh per user, and a Welsh school's lead named the
Designated Safeguarding Person (DSP) in the console, exports and emails.

The catalogue checks are static (every template's ``_()`` key has Welsh; no template has
visible text outside ``_()``); the page checks make real requests that render every
template, in Welsh, and look for English left in the visible text.
"""

from __future__ import annotations

import csv
import io
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
import jinja2.nodes
import pytest

from collector.console.i18n import best_language, catalog, translator
from collector.domain.vocabulary import ACTIONS, STATUS_LABELS, category_label, known_categories
from collector.services.alerts import alert_text
from collector.services.casework import CLOSE_REASONS
from collector.services.estate import EstateService
from collector.store.base import QueueItemRow, SiteRow

from .conftest import csrf_of, login, post
from .support import connect, seed_capture

TEMPLATES = Path(__file__).resolve().parents[2] / "collector" / "console" / "templates"
CY = catalog("cy")
#: English strings whose Welsh is the same word (names, acronyms): not "left in English".
SAME = {k for k, v in CY.items() if k == v}
_ATTRS = {"title", "placeholder", "aria-label", "alt"}
_LETTER = re.compile(r"[A-Za-z]")


def template_keys() -> dict[str, str]:
    """Every constant ``_("...")`` key in the templates -> the first template using it."""
    env = jinja2.Environment(autoescape=True)
    keys: dict[str, str] = {}
    for f in sorted(TEMPLATES.glob("*.html")):
        for call in env.parse(f.read_text(encoding="utf-8")).find_all(jinja2.nodes.Call):
            if (isinstance(call.node, jinja2.nodes.Name) and call.node.name == "_"
                    and call.args and isinstance(call.args[0], jinja2.nodes.Const)):
                keys.setdefault(str(call.args[0].value), f.name)
    return keys


class _Text(HTMLParser):
    """Visible text nodes and text attributes of an HTML document (not code or scripts)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[tuple[int, str]] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in {"input", "br", "meta", "link", "img", "rect", "hr", "option"}:
            self.stack.append(tag)
        for k, v in attrs:
            if k in _ATTRS and v:
                self.texts.append((self.getpos()[0], v.strip()))

    def handle_endtag(self, tag: str) -> None:
        while self.stack and self.stack[-1] != tag:
            self.stack.pop()
        if self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if not any(t in {"code", "script", "style"} for t in self.stack) and data.strip():
            self.texts.append((self.getpos()[0], data.strip()))


def visible_text(html: str) -> list[tuple[int, str]]:
    p = _Text()
    p.feed(html)
    return p.texts


def test_every_template_string_has_welsh() -> None:
    keys = template_keys()
    assert len(keys) > 300
    missing = {k: t for k, t in keys.items() if k not in CY}
    assert not missing, f"no Welsh in i18n_cy.toml for: {missing}"
    empty = [k for k in keys if not CY[k].strip()]
    assert not empty
    # placeholders survive translation, so no value is lost or invented
    for k in keys:
        assert sorted(re.findall(r"\{(\w+)\}", k)) == sorted(re.findall(r"\{(\w+)\}", CY[k])), k


def test_no_template_has_visible_text_outside_the_translator() -> None:
    """Strip Jinja from each template's source and parse what is left: any text node or text
    attribute with letters in it was written without ``_()``."""
    bad = []
    for f in sorted(TEMPLATES.glob("*.html")):
        src = f.read_text(encoding="utf-8")
        src = re.sub(r"\{#.*?#\}", "", src, flags=re.S)
        src = re.sub(r"\{\{.*?\}\}", "", src, flags=re.S)
        src = re.sub(r"\{%.*?%\}", "", src, flags=re.S)
        bad += [(f.name, line, text) for line, text in visible_text(src)
                if _LETTER.search(text)]
    assert not bad, "text outside _(): " + "; ".join(f"{n}:{ln} {t!r}" for n, ln, t in bad)


def test_the_words_python_builds_have_welsh_too() -> None:
    words = (list(STATUS_LABELS.values()) + list(ACTIONS.values()) + list(CLOSE_REASONS)
             + [category_label(c) for c in known_categories()])
    assert [w for w in words if w not in CY] == []
    _ = translator("cy")
    # text a service formatted from a catalogue key is translated with its values
    assert _("Status: Closed") == "Statws: Ar gau"
    assert _("Four-eyes: approved (access until 16/11/2026 11:00)") == (
        "Pedwar llygad: cymeradwywyd (mynediad tan 16/11/2026 11:00)")
    assert _("already false positive") == "eisoes positif ffug"
    assert _("Alex Smith") == "Alex Smith"   # names are left alone


def test_the_browser_language_picks_the_login_page_language() -> None:
    assert best_language("cy-GB,cy;q=0.9,en-GB;q=0.8") == "cy"
    assert best_language("en-GB,en;q=0.9,cy;q=0.5") == "en"
    assert best_language("fr-FR,cy;q=0.4") == "cy"
    assert best_language("") == "en" and best_language("de, x;q=nonsense") == "en"


# --- real pages --------------------------------------------------------------------------

def _set(world: Any, sql: str, params: tuple[Any, ...]) -> None:
    with connect(world.db) as conn:
        conn.execute(sql, params)


def _welsh_user(world: Any, *usernames: str) -> None:
    for u in usernames:
        _set(world, "UPDATE users SET language = ? WHERE username = ?", ("cy", u))


def _wales(world: Any, site_id: str) -> None:
    EstateService(world.store, lambda: int(time.time() * 1000)).set_wales(
        "test", site_id, True)


def _english_left(html: str) -> list[str]:
    """Visible text on a Welsh page that is an English catalogue string."""
    left = []
    texts = visible_text(html)
    for _line, text in texts:
        t = " ".join(text.split())
        if t in CY and t not in SAME:
            left.append(t)
    page = " ".join(" ".join(t.split()) for _l, t in texts)
    left += [k for k in CY if len(k) >= 30 and "{" not in k and k not in SAME and k in page]
    return left


def _seed(world: Any) -> dict[str, int]:
    now = int(world.clock() * 1000)
    with connect(world.db) as conn:
        ids = {
            "harm": seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                                 severity=4, time_ms=now - 3_600_000),
            "urgent": seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                                   severity=5, category="suicide", rule_id="suicide.intent",
                                   match="end it all", time_ms=now - 1_800_000),
            "csam": seed_capture(conn, site_id="north", device_id=world.devices["bare"],
                                 severity=5, category="csam", rule_id="csam.terms",
                                 match="x", time_ms=now - 600_000),
        }
    return ids


def test_every_template_renders_in_welsh_with_no_english_left(world: Any, app: Any,
                                                              client_for: Any) -> None:
    ids = _seed(world)
    _welsh_user(world, "dsl1", "deputy1", "tech1", "trust1")
    console = app.state.console
    rendered: set[str] = set()
    real_get = console.env.get_template

    def spy(name: Any, *a: Any, **k: Any) -> Any:
        rendered.add(str(name))
        return real_get(name, *a, **k)

    console.env.get_template = spy
    pages: dict[str, str] = {}
    deputy = client_for("deputy1")
    r = post(deputy, f"/captures/{ids['csam']}/unlock", {"reason": "police referral"})
    assert r.status_code == 303
    dsl = client_for("dsl1")
    for url in ("/queue", "/queue/rows", f"/captures/{ids['harm']}",
                f"/captures/{ids['csam']}", "/approvals", "/audit", "/exports",
                "/exports/incident-log.html", "/reports/weekly", "/reports/annual",
                "/dashboard", "/notifications", "/pupils/north/pupil1", "/captures/999999"):
        resp = dsl.get(url)
        assert resp.status_code in (200, 404), (url, resp.status_code)
        pages[url] = resp.text
    pending = re.search(r'href="/approvals/(\d+)"', pages["/approvals"])
    assert pending
    pages["approval"] = dsl.get(f"/approvals/{pending.group(1)}").text
    token = csrf_of(pages["/queue"])
    pages["bulk"] = dsl.post("/queue/bulk", data={"csrf": token, "status": "false_positive",
                                                  "reason": "Duplicate of another item",
                                                  "item": [str(ids["harm"]), str(ids["csam"])]},
                             follow_redirects=False).text
    tech = client_for("tech1")
    pages["/devices"], pages["/rules/stats"] = tech.get("/devices").text, tech.get(
        "/rules/stats").text
    trust = client_for("trust1")
    pages["/trust"], pages["/trust/weekly"] = trust.get("/trust").text, trust.get(
        "/trust/weekly").text
    anon = app_client(app)
    pages["/login"] = anon.get("/login", headers={"Accept-Language": "cy,en;q=0.5"}).text

    assert rendered == {f.name for f in TEMPLATES.glob("*.html")}, (
        "templates no request rendered: "
        f"{sorted({f.name for f in TEMPLATES.glob('*.html')} - rendered)}")
    for url, html in pages.items():
        assert url == "/queue/rows" or 'lang="cy"' in html, url   # the rows: a fragment
        assert _english_left(html) == [], f"{url} shows English: {_english_left(html)}"
    assert "Ciw diogelu" in pages["/queue"] and "Mewngofnodi" in pages["/login"]
    assert "Atgyfeiriwyd at bennaeth blwyddyn" in pages[f"/captures/{ids['harm']}"]
    assert "Hunan-niweidio" in pages["/queue"]                      # a category label
    assert "Nodwyd 1 eitem fel Positif ffug" in pages["bulk"]
    assert "Heb ei ganfod." in pages["/captures/999999"]


def app_client(app: Any) -> Any:
    from starlette.testclient import TestClient

    return TestClient(app, base_url="https://testserver")


def test_a_welsh_user_sees_welsh_and_an_english_colleague_english(world: Any,
                                                                  client_for: Any) -> None:
    _seed(world)
    _welsh_user(world, "dsl1")
    cy, en = client_for("dsl1"), client_for("deputy1")
    welsh, english = cy.get("/queue").text, en.get("/queue").text
    assert "Ciw diogelu" in welsh and "Safeguarding queue" not in welsh
    assert "Safeguarding queue" in english and "Ciw diogelu" not in english
    assert "(ADD)" in welsh and "(Deputy DSL)" in english         # England: the DSL


def test_the_language_switch_changes_the_users_language_and_is_audited(world: Any,
                                                                        client_for: Any) -> None:
    c = client_for("dsl1")
    page = c.get("/queue").text
    assert 'id="language-cy"' in page
    r = c.post("/language", data={"csrf": csrf_of(page), "language": "cy", "next": "/queue"},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/queue"
    assert "Ciw diogelu" in c.get("/queue").text
    with connect(world.db) as conn:
        rows = [tuple(x) for x in conn.execute(
            "SELECT actor, target, detail FROM audit WHERE action = 'user.language'")]
    assert rows and rows[0][0] == "dsl1" and '"cy"' in rows[0][2]
    # without the session's CSRF token the switch is refused
    r = c.post("/language", data={"language": "en"}, follow_redirects=False)
    assert r.status_code == 403 and "Ciw diogelu" in c.get("/queue").text
    assert c.post("/language", data={"csrf": csrf_of(page), "language": "fr"},
                  follow_redirects=False).status_code == 400


def test_the_login_page_follows_the_browser_before_login(app: Any) -> None:
    with app_client(app) as c:
        assert "Mewngofnodi" in c.get("/login", headers={"Accept-Language": "cy-GB"}).text
        assert "Log in" in c.get("/login", headers={"Accept-Language": "en-GB,cy;q=0.3"}).text
        assert "Mewngofnodi" in c.get("/login?lang=cy").text
        assert login(c, "dsl1").status_code == 303      # the form works in either language


def test_a_welsh_school_names_its_lead_the_dsp_in_both_languages(world: Any,
                                                                 client_for: Any) -> None:
    _seed(world)
    _wales(world, "north")
    _welsh_user(world, "dsl1")
    welsh = client_for("dsl1").get("/queue").text
    english = client_for("deputy1").get("/queue").text
    assert "(PDD)" in welsh and "(ADD)" not in welsh
    assert "(Deputy DSP)" in english and "DSL" not in visible(english)
    weekly = client_for("deputy1").get("/reports/weekly").text
    assert "Designated Safeguarding Person (DSP)" in weekly
    assert "Person Diogelu Dynodedig (PDD)" in client_for("dsl1").get("/reports/weekly").text
    # a site without contacts: the banner names the DSP
    _set(world, "UPDATE sites SET dsl_contacts = '[]' WHERE id = ?", ("north",))
    assert "has no DSP contacts" in client_for("deputy1").get("/queue").text
    # the English school keeps its DSL
    assert "(DSL)" in client_for("dslsouth").get("/queue").text


def visible(html: str) -> str:
    return " ".join(t for _l, t in visible_text(html))


def test_exports_and_alert_emails_of_a_welsh_school_name_the_dsp(world: Any,
                                                                 client_for: Any) -> None:
    ids = _seed(world)
    _wales(world, "north")
    dsl = client_for("dsl1")
    r = post(dsl, f"/captures/{ids['harm']}/act", {"action": "refer_head_of_year"},
             page=f"/captures/{ids['harm']}")
    assert r.status_code == 303
    rows = list(csv.DictReader(io.StringIO(dsl.get("/exports/cpoms.csv").text.lstrip("\ufeff"))))
    mine = [x for x in rows if x["Vigil Reference"] == f"VIGIL-{ids['harm']}"]
    assert mine and mine[0]["Recorded By"] == "dsl1 (DSP)"
    html = dsl.get("/exports/incident-log.html").text
    assert "kept by the school&#39;s Designated Safeguarding Person (DSP)" in html
    site = SiteRow("north", "North High School", [], None, wales=True)
    item = QueueItemRow(id=1, site_id="north", device_id="d", os_user="p", rule_id="r",
                        category="suicide", severity=5, priority=120, pinned=True,
                        refer_police=False, status="new", count=1, first_time_ms=0,
                        last_time_ms=0)
    _subject, body = alert_text(site, item, "https://vigil.example/captures/1", False)
    assert "Designated Safeguarding Person (DSP)" in body
    _subject, body = alert_text(SiteRow("s", "S", [], None), item, "x", False)
    assert "Designated Safeguarding Lead (DSL)" in body


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_cli_sets_a_users_language_and_a_welsh_site(world: Any, tmp_path: Path) -> None:
    """SQLite only: the CLI opens the data directory's own store file."""
    from collector.cli import main

    data = ["--data-dir", str(Path(world.db_path).parent)]
    assert main(["user", "language", "dsl1", "cy", *data]) == 0
    assert main(["site", "wales", "south", "--on", *data]) == 0
    assert main(["site", "add", "--site", "ysgol", "--name", "Ysgol Gymraeg", "--wales",
                 *data]) == 0
    with connect(world.db) as conn:
        assert [tuple(r) for r in conn.execute(
            "SELECT language FROM users WHERE username = 'dsl1'")] == [("cy",)]
        assert sorted(r[0] for r in conn.execute("SELECT id FROM sites WHERE wales = 1")) == [
            "south", "ysgol"]
