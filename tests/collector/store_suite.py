"""The store test suite, written once against the Store interface.

A backend's test module subclasses :class:`StoreSuite` and provides a ``store`` fixture (a
migrated, empty store whose data dir is ``tmp_path``). SQLite: tests/collector/test_store_sqlite.py.
A PostgreSQL backend would add a second subclass and run the same tests.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from collector.domain.triage import TriagePolicy
from collector.services.ingest import ingest
from collector.store.base import (
    DeviceExists,
    Heartbeat,
    NewCapture,
    PurgePolicy,
    RulesAckRow,
    Store,
    TokenError,
)

DAY = 86_400_000
T0 = 1_800_000_000_000
POLICY = TriagePolicy(dedupe_window_ms=3_600_000, timezone="UTC")


def cap(i: int, *, device: str = "d-1", user: str = "u1", rule: str = "r1", sev: int = 3,
        t: int = T0, category: str = "self_harm", shot: bytes | None = None) -> NewCapture:
    return NewCapture(
        id=f"c{i}", device_id=device, site_id="s1", group_name="g1", os_user=user,
        hostname="pc", time_ms=t, last_time_ms=t, count=1, source="keys", rule_id=rule,
        category=category, severity=sev, match="m", context="ctx", window_title="w",
        process="p", match_kind="exact", media=None, rules_version=1, received_at=t,
        screenshot=shot)


def _driver_error(store: Store) -> type[Exception]:
    """The base class of the backend driver's database errors (what a trigger raises)."""
    if store.backend == "sqlite":
        return sqlite3.DatabaseError
    import psycopg

    return psycopg.Error


class StoreSuite:
    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        raise NotImplementedError

    @pytest.fixture
    def seeded(self, store: Store) -> Store:
        store.ensure_site("s1", "School One", T0)
        store.ensure_group("s1", "g1", "secondary")
        _, secret = store.create_token("s1", "g1", 5, T0 + DAY, "test", T0)
        store.enrol_device(secret, "d-1", "pc-1", "linux", "1.0", "abc", T0)
        return store

    def test_tokens_expire_revoke_and_run_out(self, store: Store) -> None:
        store.ensure_site("s1", "School One", T0)
        tok, secret = store.create_token("s1", "g1", 1, T0 + DAY, "test", T0)
        assert store.check_token(secret, T0).id == tok.id
        with pytest.raises(TokenError) as e:
            store.check_token(secret, T0 + DAY)
        assert e.value.reason == "expired"
        store.enrol_device(secret, "d-1", "pc", "linux", "1", "01", T0)
        with pytest.raises(TokenError) as e:
            store.enrol_device(secret, "d-2", "pc", "linux", "1", "02", T0)
        assert e.value.reason == "used_up"
        tok2, secret2 = store.create_token("s1", "g1", 3, T0 + DAY, "test", T0)
        assert store.revoke_token(tok2.id, T0)
        with pytest.raises(TokenError) as e:
            store.check_token(secret2, T0)
        assert e.value.reason == "revoked"
        with pytest.raises(TokenError):
            store.check_token("nope", T0)

    def test_enrol_never_replaces_a_device(self, seeded: Store) -> None:
        _, secret = seeded.create_token("s1", "g1", 5, T0 + DAY, "test", T0)
        with pytest.raises(DeviceExists):
            seeded.enrol_device(secret, "d-1", "other", "linux", "1", "ff", T0)
        dev = seeded.get_device("d-1")
        assert dev is not None and dev.hostname == "pc-1" and dev.cert_serial == "abc"
        assert seeded.check_token(secret, T0).uses == 0  # a refused enrolment uses nothing

    def test_ingest_is_idempotent_and_merges_repeats(self, seeded: Store) -> None:
        r1 = ingest(seeded, [cap(1), cap(2, t=T0 + 1000)], T0, POLICY)
        assert sorted(r1.stored_ids) == ["c1", "c2"] and len(r1.items) == 1
        r2 = ingest(seeded, [cap(2, t=T0 + 1000), cap(3, t=T0 + 2000)], T0, POLICY)
        assert r2.existing_ids == ["c2"] and r2.stored_ids == ["c3"]
        item = seeded.get_queue_item(r1.items[0].id)
        assert item is not None and item.count == 3 and item.status == "new"
        assert seeded.capture_ids_for_item(item.id) == ["c1", "c2", "c3"]
        seeded.set_queue_status(item.id, "closed", "dsl1", T0 + 3000)
        r3 = ingest(seeded, [cap(4, t=T0 + 4000)], T0 + 4000, POLICY)
        assert r3.items[0].id != item.id and r3.items[0].created

    def test_an_id_owned_by_another_device_is_a_conflict_not_a_redelivery(
        self, seeded: Store
    ) -> None:
        _, secret = seeded.create_token("s1", "g1", 5, T0 + DAY, "test", T0)
        seeded.enrol_device(secret, "d-2", "pc-2", "linux", "1.0", "def", T0)
        ingest(seeded, [cap(1)], T0, POLICY)
        r = ingest(seeded, [cap(1, device="d-2"), cap(2, device="d-2")], T0, POLICY)
        assert r.conflicts == {("c1", "d-2")} and r.stored_ids == ["c2"]
        assert r.existing_ids == []
        both = ingest(seeded, [cap(3), cap(3, device="d-2")], T0, POLICY)  # same batch
        assert both.stored_ids == ["c3"] and both.conflicts == {("c3", "d-2")}

    def test_heartbeats_and_rules_acks(self, seeded: Store) -> None:
        ingest(seeded, [], T0, POLICY,
                      heartbeats=[Heartbeat("d-1", T0 + 5, "2.0", 4, 12, 999, {"full": 3},
                                            "pupil", "pc-9", "linux")],
                      rules_acks=[RulesAckRow("d-1", 4, True, "", T0 + 5)])
        dev = seeded.get_device("d-1")
        assert dev is not None
        assert (dev.agent_version, dev.rules_version, dev.spool_depth, dev.drops,
                dev.last_seen_at, dev.hostname) == ("2.0", 4, 12, {"full": 3}, T0 + 5, "pc-9")
        assert seeded.rules_acks("d-1")[0].applied
        assert [d.id for d in seeded.list_devices(silent_since_ms=T0 + 5)] == []
        assert [d.id for d in seeded.list_devices(silent_since_ms=T0 + 6)] == ["d-1"]

    def test_exemption_keeps_capture_out_of_queue_and_is_audited(self, seeded: Store) -> None:
        with pytest.raises(ValueError, match="reason"):
            seeded.add_exemption("exemption", "s1", " ", "tech", T0, category="radicalisation",
                                 expires_at=T0 + DAY)
        eid = seeded.add_exemption("exemption", "s1", "History: extremism topic", "tech", T0,
                                   category="radicalisation", expires_at=T0 + DAY)
        r = ingest(seeded, [cap(1, category="radicalisation", sev=4),
                           cap(2, category="radicalisation", sev=5)], T0 + 1, POLICY)
        assert r.stored_ids == ["c1", "c2"] and [i.severity for i in r.items] == [5]
        assert any(a["action"] == "exemption.add" and a["target"] == str(eid)
                   for a in seeded.audit_rows())

    def test_audit_is_append_only(self, seeded: Store, tmp_path: Path) -> None:
        seeded.audit("cli:me", "test.action", "x", "s1", {"k": 1})
        assert seeded.audit_rows("test.action")[0]["actor"] == "cli:me"
        # Straight past the repositories, on the backend's own connection: the database
        # itself (SQLite triggers, PostgreSQL trigger functions) refuses to rewrite history.
        for sql in ("UPDATE audit SET actor = 'x'", "DELETE FROM audit"):
            with pytest.raises(_driver_error(seeded), match="append-only"):
                seeded.db.execute(sql)  # type: ignore[attr-defined]  # both backends' Db
        assert [a["actor"] for a in seeded.audit_rows("test.action")] == ["cli:me"]

    def test_rule_versions(self, store: Store) -> None:
        assert store.active_rule_version() is None and store.next_rule_version() == 1
        assert store.active_rule_version_number() == 0
        store.add_rule_version(1, "h1", b"b1", "me", "first", T0)
        store.add_rule_version(2, "h2", b"b2", "me", "second", T0)
        active = store.active_rule_version()
        assert active is not None and (active.version, active.bundle) == (2, b"b2")
        assert [v.active for v in store.list_rule_versions()] == [False, True]
        assert store.active_rule_version_number() == 2

    def test_purge_false_positives_closed_and_screenshots(self, seeded: Store,
                                                          tmp_path: Path) -> None:
        r = ingest(seeded, [cap(1, shot=b"png-bytes"), cap(2, rule="r2"), cap(3, rule="r3")],
                          T0, POLICY)
        fp, closed, open_ = (i.id for i in r.items)
        seeded.set_queue_status(fp, "false_positive", "dsl", T0)
        seeded.set_queue_status(closed, "closed", "dsl", T0)
        shots = list((tmp_path / "screenshots").glob("*.bin"))
        assert len(shots) == 1
        policy = PurgePolicy(false_positive_days=30, closed_days=90, audit_days=365)
        dry = seeded.purge(T0 + 31 * DAY, policy, dry_run=True)
        assert (dry.queue_items, dry.captures, dry.screenshots) == (1, 1, 1) and shots[0].exists()
        done = seeded.purge(T0 + 31 * DAY, policy)
        assert (done.queue_items, done.captures) == (1, 1) and not shots[0].exists()
        assert seeded.get_queue_item(fp) is None and seeded.get_queue_item(closed) is not None
        seeded.purge(T0 + 91 * DAY, policy)
        assert seeded.get_queue_item(closed) is None
        assert seeded.get_queue_item(open_) is not None  # open work is never purged
        gone = seeded.purge(T0 + 400 * DAY, policy)
        assert gone.audit_rows > 0 and seeded.audit_rows() == []

    # -- the services layer over this backend ---------------------------------------------
    def test_audit_refuses_capture_content_from_any_caller(self, seeded: Store) -> None:
        with pytest.raises(ValueError, match="capture content"):
            seeded.audit("cli:me", "capture.view", "x", "s1", {"context": "kill myself"})
        assert seeded.audit_rows("capture.view") == []

    def test_a_rolled_back_batch_leaves_no_screenshot_and_acks_nothing(
        self, seeded: Store, tmp_path: Path
    ) -> None:
        class Boom(Exception):
            pass

        real = seeded.insert_captures

        def fail(rows: Any) -> None:
            real(rows)
            raise Boom  # after the rows were written, before commit

        seeded.insert_captures = fail  # type: ignore[method-assign]
        with pytest.raises(Boom):
            ingest(seeded, [cap(1, shot=b"png-1"), cap(2, rule="r2")], T0, POLICY)
        seeded.insert_captures = real  # type: ignore[method-assign]
        assert seeded.capture_owners(["c1", "c2"]) == {}
        assert list((tmp_path / "screenshots").glob("*")) == []
        # the resend after the failure stores both, and the screenshot lands after commit
        r = ingest(seeded, [cap(1, shot=b"png-1"), cap(2, rule="r2")], T0, POLICY)
        assert sorted(r.stored_ids) == ["c1", "c2"]
        assert [p.name for p in (tmp_path / "screenshots").iterdir()] == ["c1.bin"]

    def test_a_redelivered_screenshot_is_not_written_twice(self, seeded: Store,
                                                          tmp_path: Path) -> None:
        ingest(seeded, [cap(1, shot=b"png-1")], T0, POLICY)
        before = (tmp_path / "screenshots" / "c1.bin").read_bytes()
        r = ingest(seeded, [cap(1, shot=b"png-other")], T0, POLICY)
        assert r.existing_ids == ["c1"]
        assert (tmp_path / "screenshots" / "c1.bin").read_bytes() == before
        assert sorted(p.name for p in (tmp_path / "screenshots").iterdir()) == ["c1.bin"]

    def test_one_batch_triages_many_pupils_and_rules_at_once(self, seeded: Store) -> None:
        # 3 pupils x 4 rules x 5 repeats in one batch: 12 items, counts of 5, and each
        # pupil's later items rank higher than the first (repetition and escalation).
        caps = [cap(100 * u + 10 * r + k, user=f"u{u}", rule=f"r{r}", t=T0 + 1000 * k,
                    category=("self_harm", "bullying", "drugs", "gambling")[r])
                for u in range(3) for r in range(4) for k in range(5)]
        res = ingest(seeded, caps, T0, POLICY)
        assert len(res.stored_ids) == 60 and len(res.items) == 12
        assert {i.count for i in res.items} == {5}
        again = ingest(seeded, [cap(9999, user="u0", rule="r0", t=T0 + 9000)], T0, POLICY)
        merged = again.items[0]
        assert not merged.created and merged.count == 6
        assert {i.id for i in res.items} >= {merged.id}

    def test_status_changes_go_through_the_lifecycle(self, seeded: Store) -> None:
        item = ingest(seeded, [cap(1)], T0, POLICY).items[0]
        seeded.set_queue_status(item.id, "closed", "dsl", T0 + 10)
        with pytest.raises(ValueError, match="cannot go back to 'new'"):
            seeded.set_queue_status(item.id, "new", "dsl", T0 + 20)
        with pytest.raises(ValueError, match="status must be one of"):
            seeded.set_queue_status(item.id, "deleted", "dsl", T0 + 20)
        seeded.set_queue_status(item.id, "in_review", "dsl", T0 + 30)  # reopened
        again = ingest(seeded, [cap(2, t=T0 + 40)], T0 + 40, POLICY)
        assert again.items[0].id == item.id  # an open item takes merges again

    def test_a_collector_side_scorer_may_raise_never_lower(self, seeded: Store) -> None:
        from collector.domain.scoring import Rescore
        from collector.services.ingest import IngestService

        class Raise:
            name = "test"

            def rescore(self, captures: Any) -> list[Rescore]:
                return [Rescore("c1", 5, 0.97, "collector scorer: 0.97"),
                        Rescore("c2", 1, 0.10, "collector scorer: 0.10")]

        svc = IngestService(seeded, POLICY, Raise())
        r = svc.ingest([cap(1, sev=3), cap(2, sev=3, rule="r2")], T0)
        sev = {i.rule_id: i.severity for i in r.items}
        assert sev == {"r1": 5, "r2": 3}
        assert next(i for i in r.items if i.rule_id == "r1").pinned
