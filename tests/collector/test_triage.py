"""Triage is pure: property tests over random capture streams, plus worked examples."""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.domain import triage
from collector.domain.triage import CaptureFacts, Exemption, OpenItem, TriagePolicy, UserHistory

T0 = int(dt.datetime(2026, 3, 2, 10, 0, tzinfo=ZoneInfo("Europe/London")).timestamp() * 1000)
HOUR = 3_600_000
POLICY = TriagePolicy(dedupe_window_ms=HOUR)


def fact(i: int, *, device: str = "d1", user: str = "u1", rule: str = "r1",
         category: str = "self_harm", severity: int = 3, t: int = T0, count: int = 1,
         kind: str = "exact", site: str = "s", group: str = "g") -> CaptureFacts:
    return CaptureFacts(f"c{i}", device, site, group, user, rule, category, severity, kind, t, t,
                        count)


captures = st.lists(
    st.builds(
        lambda i, d, u, r, cat, sev, dt_, n, kind: fact(
            i, device=d, user=u, rule=r, category=cat, severity=sev, t=T0 + dt_, count=n,
            kind=kind),
        st.integers(0, 10**9), st.sampled_from(["d1", "d2"]), st.sampled_from(["u1", "u2"]),
        st.sampled_from(["r1", "r2", "r3"]),
        st.sampled_from(["self_harm", "bullying", "csam", "radicalisation"]),
        st.integers(1, 5), st.integers(0, 6 * HOUR), st.integers(1, 4),
        st.sampled_from(["exact", "normalised"])),
    max_size=40, unique_by=lambda c: c.id)

exemptions = st.lists(st.builds(
    lambda i, rule, cat, group: Exemption(i, "exemption", "s", group, rule, cat, T0 - HOUR,
                                          T0 + 100 * HOUR),
    st.integers(1, 100), st.sampled_from([None, "r1"]), st.sampled_from([None, "bullying"]),
    st.sampled_from([None, "g", "other"])), max_size=3)


@settings(max_examples=200, deadline=None)
@given(caps=captures, exs=exemptions, open_count=st.integers(0, 5),
       open_status=st.sampled_from(triage.STATUSES))
def test_every_capture_lands_in_exactly_one_item_or_is_exempt(
    caps: list[CaptureFacts], exs: list[Exemption], open_count: int, open_status: str
) -> None:
    old = OpenItem(7, open_status, open_count or 1, T0 - HOUR, T0 - HOUR // 2, 3, 60)
    plan = triage.plan(caps, {("d1", "u1", "r1"): old}, {}, exs, T0, POLICY)
    placed = [cid for it in plan.items for cid in it.capture_ids]
    assert sorted(placed + list(plan.exempted)) == sorted(c.id for c in caps)
    assert len(placed) == len(set(placed))
    by_id = {c.id: c for c in caps}
    for it in plan.items:
        members = [by_id[cid] for cid in it.capture_ids]
        assert {m.key for m in members} == {it.key}
        base = old.count if it.existing_id == 7 else 0
        assert it.count == base + sum(m.count for m in members)  # counts add up, none lost
        assert it.severity >= max(m.severity for m in members)
        assert it.pinned == (it.severity >= 5)
        if any(m.category == "csam" for m in members):
            assert it.refer_police
        times = sorted(m.time_ms for m in members)
        assert all(b - a <= POLICY.dedupe_window_ms for a, b in itertools.pairwise(times))
        if it.existing_id is not None:
            assert it.existing_id == 7 and open_status in triage.OPEN_STATUSES
    for cid in plan.exempted:
        assert by_id[cid].severity < 5  # severity 5 is never suppressed
        assert by_id[cid].category not in triage.ILLEGAL_CATEGORIES


@given(sev=st.integers(1, 4), rep=st.integers(0, 50), cats=st.integers(1, 8),
       late=st.booleans(), kind=st.sampled_from(["exact", "normalised"]))
def test_priority_rises_with_each_factor(sev: int, rep: int, cats: int, late: bool,
                                         kind: str) -> None:
    p = triage.score(sev, rep, cats, late, kind)
    assert 20 <= p <= 150
    assert triage.score(sev + 1, rep, cats, late, kind) > p
    assert triage.score(sev, rep + 1, cats, late, kind) >= p
    assert triage.score(sev, rep, cats + 1, late, kind) >= p
    assert triage.score(sev, rep, cats, True, kind) >= p
    assert triage.score(sev, rep, cats, late, "exact") >= triage.score(sev, rep, cats, late,
                                                                          "normalised")


def test_repeats_merge_within_window_and_split_after() -> None:
    caps = [fact(1, t=T0), fact(2, t=T0 + HOUR // 2), fact(3, t=T0 + 3 * HOUR)]
    plan = triage.plan(caps, {}, {}, [], T0, POLICY)
    assert [(it.count, it.capture_ids) for it in plan.items] == [(2, ["c1", "c2"]),
                                                                 (1, ["c3"])]


def test_merge_into_open_item_but_not_a_closed_one() -> None:
    old = OpenItem(5, "in_review", 3, T0 - HOUR, T0 - 60_000, 3, 70)
    plan = triage.plan([fact(1)], {("d1", "u1", "r1"): old}, {}, [], T0, POLICY)
    assert plan.items[0].existing_id == 5 and plan.items[0].count == 4
    closed = triage.with_status(old, "closed")
    plan = triage.plan([fact(1)], {("d1", "u1", "r1"): closed}, {}, [], T0, POLICY)
    assert plan.items[0].existing_id is None and plan.items[0].count == 1


def test_repetition_escalation_late_night_and_match_kind_raise_priority() -> None:
    base = triage.plan([fact(1, kind="normalised")], {}, {}, [], T0, POLICY).items[0].priority
    hist = {("s", "u1"): UserHistory(5, frozenset({"bullying", "radicalisation"}))}
    assert triage.plan([fact(1, kind="normalised")], {}, hist, [], T0,
                       POLICY).items[0].priority == base + 10 + 10
    late = int(dt.datetime(2026, 3, 2, 1, 30, tzinfo=ZoneInfo("Europe/London")).timestamp()
               * 1000)
    assert triage.plan([fact(1, kind="normalised", t=late)], {}, {}, [], T0,
                       POLICY).items[0].priority == base + 10
    assert triage.plan([fact(1)], {}, {}, [], T0, POLICY).items[0].priority == base + 5


def test_severity_five_pinned_and_csam_referred() -> None:
    it = triage.plan([fact(1, severity=5, category="csam")], {}, {}, [], T0, POLICY).items[0]
    assert it.pinned and it.refer_police and it.priority >= 100


def test_exemptions_are_time_boxed_and_scoped() -> None:
    ex = Exemption(1, "exemption", "s", "g", None, "radicalisation", T0 - HOUR, T0 + HOUR)
    cap = fact(1, category="radicalisation", severity=4)
    assert triage.find_exemption(cap, [ex], T0) == ex
    assert triage.find_exemption(cap, [ex], T0 + 2 * HOUR) is None  # expired
    assert triage.find_exemption(fact(2, category="radicalisation", group="h"), [ex], T0) is None
    assert triage.find_exemption(fact(3, category="radicalisation", severity=5), [ex], T0) is None
