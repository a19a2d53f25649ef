"""Year group -> age band, and roster parsing."""

from __future__ import annotations

import pytest

from collector.services.roster import age_band, parse_roster


@pytest.mark.parametrize(("year", "band"), [
    ("Reception", "primary"), ("Year 1", "primary"), ("Y6", "primary"), ("6C", "primary"),
    ("Year 7", "secondary"), ("9B", "secondary"), ("11", "secondary"), ("yr 10", "secondary"),
    ("12", "sixth_form"), ("Year 13", "sixth_form"), ("13LX", "sixth_form"),
    ("Staff", "staff"), ("staff", "staff"),
])
def test_age_band(year, band):
    assert age_band(year) == band


@pytest.mark.parametrize("year", ["", "Year 14", "Form Blue", "99"])
def test_age_band_rejects_with_a_hint(year):
    with pytest.raises(ValueError, match=r"year group .*(e\.g\.|outside)"):
        age_band(year)


def test_parse_roster_without_header_and_duplicates():
    r = parse_roster("\ufeffa1,Ann,Year 8\nA1,Ann again,Year 8\n\nb2,\"Bee, B\",10X,north\n",
                     "north")
    assert r.rows == [("a1", "Ann", "Year 8", "secondary"), ("b2", "Bee, B", "10X", "secondary")]
    assert [(e.line, "appears twice" in str(e)) for e in r.errors] == [(2, True)]
