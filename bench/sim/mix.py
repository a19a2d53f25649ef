"""A realistic capture mix for simulated agents, pre-serialised so the simulator's CPU goes
to the wire and not to building protobufs.

Severity: most hits are low (1-2: circumvention, gambling, mild bullying); 5 is rare
(suicide intent, grooming, illegal imagery). Category follows severity, as in the default
library. One pupil is logged in per laptop (``os_user`` is fixed per agent), and a device
hits a few rules per category (three), so repeats merge into the same DSL queue item as the
collector's dedupe intends.
"""

from __future__ import annotations

import random
import time

import uuid6

from proto import vigil_pb2 as pb

__all__ = ["SEVERITY_WEIGHTS", "CaptureMix"]

#: severity -> share of captures
SEVERITY_WEIGHTS = {1: 0.45, 2: 0.33, 3: 0.15, 4: 0.06, 5: 0.01}
_CATEGORIES = {
    1: ("circumvention", "gambling"),
    2: ("bullying", "pornography", "drugs", "discrimination_hate"),
    3: ("bullying", "violence_weapons", "eating_disorders", "self_harm"),
    4: ("self_harm", "radicalisation", "abuse_disclosure", "sexual_exploitation"),
    5: ("suicide", "grooming", "csam"),
}
_SOURCES = (pb.SOURCE_KEYS,) * 7 + (pb.SOURCE_WINDOW,) * 3
_TITLES = ("Google Docs - Chromium", "YouTube - Chromium", "Minecraft", "Notes",
           "Instagram - Chromium", "Microsoft Word", "Discord")


class CaptureMix:
    """Makes captures with the mix above. Ids are UUIDv7, as the agent makes them (the
    collector's idempotency key; time-ordered, so the primary-key index grows at its end)."""

    def __init__(self, seed: int, os_user: str = "", hostname: str = "sim",
                 screenshot_bytes: int = 0, screenshot_min_severity: int = 4) -> None:
        """``screenshot_bytes`` > 0: captures at or above ``screenshot_min_severity`` (the
        agent's default is 4, so about 7 % of this mix) carry a screenshot of that size
        (incompressible bytes, as a PNG is); never for csam, as the agent does."""
        self.rng = random.Random(seed)
        self.screenshot_bytes = screenshot_bytes
        self.screenshot_min_severity = screenshot_min_severity
        self._shot = random.Random(seed ^ 0x5C).randbytes(screenshot_bytes)
        self.os_user, self.hostname = os_user or f"pupil-{seed}", hostname
        self._sev = list(SEVERITY_WEIGHTS)
        self._w = list(SEVERITY_WEIGHTS.values())

    def capture(self, now_ms: int | None = None) -> pb.Capture:
        rng = self.rng
        sev = rng.choices(self._sev, self._w)[0]
        cat = rng.choice(_CATEGORIES[sev])
        t = now_ms if now_ms is not None else int(time.time() * 1000)
        word = f"phrase{rng.randrange(40)}"
        shot = (self._shot if self.screenshot_bytes and sev >= self.screenshot_min_severity
                and cat != "csam" else b"")
        return pb.Capture(
            screenshot_png=shot,
            id=str(uuid6.uuid7()), os_user=self.os_user,
            time_unix_ms=t, last_time_unix_ms=t, count=1, source=rng.choice(_SOURCES),
            rule_id=f"{cat}.r{rng.randrange(3)}", category=cat, severity=sev, match=word,
            context=f"... something typed before the {word} and a little after it ...",
            window_title=rng.choice(_TITLES), process="chromium",
            match_kind=pb.MATCH_KIND_EXACT, rules_version=1, hostname=self.hostname)

    def batch_bytes(self, n: int, now_ms: int | None = None) -> tuple[str, bytes]:
        """(first capture id, serialised ``AgentMessage`` with ``n`` captures)."""
        caps = [self.capture(now_ms) for _ in range(n)]
        msg = pb.AgentMessage(captures=pb.CaptureBatch(captures=caps))
        return caps[0].id, msg.SerializeToString()
