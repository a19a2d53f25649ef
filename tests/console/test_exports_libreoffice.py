"""The exports opened the way a DSL opens them: in a real spreadsheet (LibreOffice Calc,
headless). Formula-looking cells must stay text (never computed), bidi controls must be
visible marks, names with accents must survive, and every row must keep its columns.

LibreOffice converts the CSV to its own format and back to CSV with formulas evaluated: a
cell the spreadsheet had treated as a formula would come back as its result."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from pathlib import Path

import pytest

from .support import connect, seed_capture

SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")
pytestmark = [
    pytest.mark.skipif(SOFFICE is None, reason="LibreOffice (libreoffice-calc-nogui) is not "
                       "installed; scripts/test installs it"),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),  # the file, not the store
]
RLO = "\u202e"


def _calc_roundtrip(csv_bytes: bytes, tmp: Path) -> list[list[str]]:
    src = tmp / "export.csv"
    src.write_bytes(csv_bytes)
    profile = tmp / "lo-profile"
    out = tmp / "out"
    # UTF-8 (76), comma (44), quote (34), first line 1; then back out as CSV from the sheet
    subprocess.run([SOFFICE, f"-env:UserInstallation=file://{profile}", "--headless",
                    "--infilter=CSV:44,34,76,1", "--convert-to", "ods", "--outdir", str(out),
                    str(src)], check=True, capture_output=True, timeout=600)
    subprocess.run([SOFFICE, f"-env:UserInstallation=file://{profile}", "--headless",
                    "--convert-to", "csv:Text - txt - csv (StarCalc):44,34,76,1",
                    "--outdir", str(tmp / "back"), str(out / "export.ods")],
                   check=True, capture_output=True, timeout=600)
    text = (tmp / "back" / "export.csv").read_text(encoding="utf-8")
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize("url", ["/exports/incident-log.csv", "/exports/cpoms.csv"])
def test_exports_open_in_a_spreadsheet_as_text(client_for, world, tmp_path, url):
    with connect(world.db) as conn:
        seed_capture(conn, site_id="north", device_id=world.devices["it1"], os_user="=1+1",
                     match=f"Siân {RLO}gnp.exe", window_title="+2+3",
                     context="=HYPERLINK(\"http://evil.example\",\"click\")")
    r = client_for("dsl1").get(url)
    assert r.status_code == 200
    sheet = _calc_roundtrip(r.content, tmp_path)
    ours = list(csv.reader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert len(sheet) == len(ours) >= 2
    assert all(len(row) == len(ours[0]) for row in sheet), "a row lost or gained columns"
    cells = [c for row in sheet[1:] for c in row]
    assert "2" not in cells and "5" not in cells, "a formula was computed"
    text = "\n".join(cells)
    assert "HYPERLINK" not in text or "=HYPERLINK" in text  # kept as text if exported
    assert RLO not in text
    if url.endswith("incident-log.csv"):
        assert "\u27e8RLO\u27e9" in text and "Siân" in text
