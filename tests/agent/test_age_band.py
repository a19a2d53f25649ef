"""Which age band's rules apply, when a device's enrolment group is a school's own name.

Schools name groups "year-9" or "trolley-2"; those are not rule age bands. The agent must
still start and match (every band's rules, so nothing is missed) until the collector's
AgentConfig names the band the pupil belongs to.
"""

from __future__ import annotations

from pathlib import Path

from agent.config import Config
from agent.paths import DataDir
from agent.sources import KeyEvent
from tests.support.agent import InProcessAgent, no_backends, spool_captures

BANDED = '''
category = "bullying"
[[rule]]
id = "bullying.primary_only"
severity = 2
phrases = ["smelly pants"]
sources = ["keys"]
groups = ["primary"]
[[rule]]
id = "bullying.secondary_only"
severity = 2
phrases = ["nobody fancies you"]
sources = ["keys"]
groups = ["secondary"]
'''


def type_line(agent: InProcessAgent, text: str) -> None:
    for ch in text:
        agent.runtime.monitor.on_key(KeyEvent("char", ch))
    agent.runtime.monitor.on_key(KeyEvent("reset"))


async def test_school_group_name_matches_every_band_until_collector_names_one(
        tmp_path: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    (library / "bullying.toml").write_text(BANDED)
    data = DataDir(tmp_path / "data").ensure()
    config = Config(rules_library=str(library), group="year-9")

    async with InProcessAgent(data, config, backends=no_backends()) as agent:
        type_line(agent, "you have smelly pants")
        type_line(agent, "nobody fancies you anyway")
        caps = await agent.wait_for(lambda: len(spool_captures(data.root)) == 2 and
                                    spool_captures(data.root), what="both captures")
        assert {c.rule_id for c in caps} == {"bullying.primary_only", "bullying.secondary_only"}

        # the collector says this pupil is in primary: only primary rules from now on
        agent.runtime.monitor.apply_config(config.replace(group="primary"))
        type_line(agent, "nobody fancies you at all")
        type_line(agent, "more smelly pants")

        def counts() -> dict[str, int]:
            return {c.rule_id: c.count for c in spool_captures(data.root)}

        # repeats merge into one capture with a count: primary's rises, secondary's does not
        await agent.wait_for(lambda: counts().get("bullying.primary_only") == 2,
                             what="the primary rule's repeat")
        assert counts()["bullying.secondary_only"] == 1
