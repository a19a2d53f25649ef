"""The console is an adapter: it reaches data only through collector/services/, never with
SQL of its own or a database driver (issue 13). An honest grep over its source."""

from __future__ import annotations

import re
from pathlib import Path

import collector.console

CONSOLE = Path(collector.console.__file__).parent
SQL = re.compile(
    r"\b(SELECT\s[^;]{0,400}?\bFROM\s|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM\s"
    r"|CREATE\s+(TABLE|INDEX)|BEGIN\s+IMMEDIATE|\bCOMMIT\b|\bROLLBACK\b|PRAGMA\s)",
    re.IGNORECASE)


def sql_in(text: str) -> list[str]:
    """Each SQL statement start found in ``text``, with its line number."""
    return [f"{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)[:60]!r}"
            for m in SQL.finditer(text)]
DRIVERS = re.compile(r"^\s*(import|from)\s+(sqlite3|sqlite_utils|psycopg|psycopg_pool)\b",
                     re.MULTILINE)


def _modules() -> list[Path]:
    mods = sorted(CONSOLE.glob("*.py"))
    assert len(mods) >= 8, "the console's modules were not found"
    return mods


def test_no_console_module_holds_sql():
    offenders = [f"{m.name}:{hit}" for m in _modules() for hit in sql_in(m.read_text())]
    assert offenders == [], "SQL belongs in collector/store/repos/:\n" + "\n".join(offenders)


def test_the_check_finds_sql_the_way_the_console_used_to_write_it():
    old = ('''conn.execute("SELECT * FROM users WHERE username = ?", (u,))''',
           '''f"""\n SELECT q.*, c.match\n FROM (SELECT * FROM queue_items q)"""''',
           '''conn.execute("UPDATE devices SET room = ? WHERE id = ?", (r, d))''',
           '''conn.execute("BEGIN IMMEDIATE")''', '''"DELETE FROM console_sessions WHERE"''')
    assert all(sql_in(text) for text in old)
    assert not sql_in("Select many items and mark them; delete the cookie from the response")


def test_no_console_module_imports_a_database_driver():
    offenders = [m.name for m in _modules() if DRIVERS.search(m.read_text())]
    assert offenders == [], f"the console must reach data through services: {offenders}"


def test_no_console_module_calls_a_connection():
    calls = re.compile(r"\.(execute|executemany|executescript|cursor|fetchone|fetchall)\(")
    offenders = [m.name for m in _modules() if calls.search(m.read_text())]
    assert offenders == []
