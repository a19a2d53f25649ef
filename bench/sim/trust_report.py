"""The trust benchmark's markdown block (bench/trust.py), and the sizing table derived from
its measured numbers, with the arithmetic shown."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["TARGETS", "render", "sizing"]

TARGETS = {"sqlite_grpc_per_s": 50_000.0, "fanout_10k_s": 5.0, "page_cold_ms": 200.0}
#: Sizing assumptions that are not measured here, stated in the table.
DEVICES = 100_000
HEARTBEAT_S = 30.0          # the agent's heartbeat period (bench/sim/agent.py, agent/uplink.py)
PEAK_RATE = 0.05            # captures/s per device at peak: the scale scan's load rate
RSS_BUDGET_MIB = 2048.0     # per collector process: the 10,000-agent target (2 GB)


_PAGE_NAMES = {"queue": "queue (open items)", "queue_all": "all items", "deep": "deep page",
               "pupil_filter": "one pupil's items (queue filter)", "pupil_page": "pupil page"}


def _f(x: float | None, fmt: str = ",.0f") -> str:
    return "-" if x is None else format(x, fmt)


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "**no**")


def _case(r: dict[str, Any], label: str) -> dict[str, Any] | None:
    for c in r.get("grpc", {}).get("cases", []):
        if c["label"] == label:
            return c
    return None


def _fan(r: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    st = r.get("fanout", {}).get("stages", [])
    return (st[0] if st else None), (st[-1] if st else None)


def _targets(r: dict[str, Any]) -> list[str]:
    out = ["| target | measured | met |", "|---|---|---|"]
    s1 = _case(r, "sqlite-1")
    if s1:
        v = s1["median_per_s"]
        out.append(f"| ≥ 50,000 stored captures/s on SQLite at {s1['streams']} streams (gRPC, "
                   f"one collector) | {v:,.0f}/s | {_met(v >= TARGETS['sqlite_grpc_per_s'])} |")
    _, big = _fan(r)
    if big:
        v = big["fanout"]["median_all_stored_s"]
        ok = None if v is None else v <= TARGETS["fanout_10k_s"]
        note = "" if big["n"] >= 10_000 else f" (only {big['n']:,} agents in this run)"
        out.append(f"| rule fan-out ≤ 5 s at 10,000 agents, every RulesAck stored | "
                   f"{_f(v, '.2f')} s at {big['n']:,} agents{note} | "
                   f"{_met(ok) if big['n'] >= 10_000 else '-'} |")
    pages = r.get("pages")
    if pages:
        for be in ("sqlite", "postgresql"):
            if be not in pages:
                continue
            worst = max(v["cold"]["p95_ms"] for k, v in pages[be].items()
                        if isinstance(v, dict) and "cold" in v)
            full = pages["size"] >= 1_000_000
            out.append(f"| queue and pupil pages ≤ 200 ms at 1M captures, cold ({be}) | worst "
                       f"cold p95 {worst:,.1f} ms at {pages['size']:,} captures | "
                       f"{_met(worst <= TARGETS['page_cold_ms']) if full else '-'} |")
    return out


def _busiest(prof: dict[str, Any] | None) -> str:
    if not prof or "threads" not in prof:
        return "no profile was taken"
    parts = []
    for name, t in list(prof["threads"].items())[:2]:
        if t["busy_samples"]:
            top = ", ".join(f"{share:.0%} `{frame}`" for share, frame in t["top"][:3])
            parts.append(f"thread {name.split(': ', 1)[-1]} busy "
                         f"{t.get('busy_of_wall', 0):.0%} of the wall time ({top})")
    return "; ".join(parts)


def _missed(r: dict[str, Any]) -> list[str]:
    """Plain sentences for every target this run missed, with the number."""
    out: list[str] = []
    s1 = _case(r, "sqlite-1")
    if s1 and s1["median_per_s"] < TARGETS["sqlite_grpc_per_s"]:
        st = next((c for c in r.get("ingest", {}).get("cases", [])
                   if c["backend"] == "sqlite" and not c["screenshot_bytes"]), None)
        out.append(f"* **Missed: ingest ≥ 50,000 stored captures/s on SQLite at 50 streams.** "
                   f"Measured {s1['median_per_s']:,.0f}/s through gRPC"
                   + (f" and {st['median_per_s']:,.0f}/s for the store alone (no gRPC)"
                      if st else "")
                   + f"; the collector used {_f(s1.get('collectors_cpu_percent'))} % of one "
                   f"core, {_f(s1.get('collectors_cpu_us_per_capture'), '.1f')} µs of CPU "
                   f"per stored capture. py-spy: {_busiest(s1['runs'][0].get('profile'))}.")
    _, big = _fan(r)
    if big and big["n"] >= 10_000:
        v = big["fanout"]["median_all_stored_s"]
        if v is None or v > TARGETS["fanout_10k_s"]:
            prof = next((x.get("profile") for x in big["fanout"]["runs"] if x.get("profile")),
                        None)
            out.append(f"* **Missed: rule fan-out ≤ 5 s at {big['n']:,} agents.** Every ack "
                       f"stored after {_f(v, '.2f')} s (median); py-spy during the first "
                       f"publish: {_busiest(prof)}.")
    pages = r.get("pages")
    if pages and pages["size"] >= 1_000_000:
        for be in ("sqlite", "postgresql"):
            for k, v in pages.get(be, {}).items():
                if isinstance(v, dict) and "cold" in v and \
                        v["cold"]["p95_ms"] > TARGETS["page_cold_ms"]:
                    out.append(f"* **Missed: {_PAGE_NAMES.get(k, k)} ≤ 200 ms cold at "
                               f"{pages['size']:,} captures on {be}.** Cold p95 "
                               f"{v['cold']['p95_ms']:,.1f} ms "
                               f"(median {v['cold']['median_ms']:,.1f} ms), `{v['url']}`.")
    return ["", *out] if out else []


def _ingest(r: dict[str, Any]) -> list[str]:
    i = r.get("ingest")
    if not i:
        return []
    raw = {"sqlite": i["raw_sqlite"]["median_per_s"],
           "postgresql": (i.get("raw_postgresql_copy") or {}).get("median_per_s")}
    shots_raw = i["raw_screenshots"]["files_per_s"]
    out = ["", "#### The store alone: `IngestService.ingest`, no gRPC", "",
           f"Same mix on both backends: {i['devices']} devices' batches of 100 interleaved as "
           f"the writer gathers them, {i['commit']:,} captures per commit (the writer's "
           f"`batch_max`), dedupe + set-wise triage + queue items + insert; screenshots "
           f"{i['screenshot_bytes'] // 1000} KB (incompressible, as a PNG) on every capture of "
           "severity ≥ 4 except csam (the agent's default), encrypted and staged outside the "
           "transaction, renamed after commit.", "",
           "| backend | screenshots | captures | stored/s | screenshots/s | raw ceiling, same "
           "rows | ratio to raw |", "|---|---|---:|---:|---:|---|---:|"]
    for c in i["cases"]:
        run = c["runs"][0]
        shots = (f"{run['screenshots']:,} ({run['screenshots'] / run['captures']:.1%})"
                 if c["screenshot_bytes"] else "none")
        ceiling = raw[c["backend"]]
        what = ("`executemany`" if c["backend"] == "sqlite" else "`COPY`")
        sps = run.get("screenshots_per_s")
        out.append(f"| {c['backend']} | {shots} | {run['captures']:,} | "
                   f"{c['median_per_s']:,.0f} | {_f(sps)} (raw file writes "
                   f"{shots_raw:,.0f}/s) | {what} {_f(ceiling)}/s | "
                   f"{_f(c['median_per_s'] / ceiling if ceiling else None, '.2f')} |"
                   if c["screenshot_bytes"] else
                   f"| {c['backend']} | {shots} | {run['captures']:,} | "
                   f"{c['median_per_s']:,.0f} | - | {what} {_f(ceiling)}/s | "
                   f"{_f(c['median_per_s'] / ceiling if ceiling else None, '.2f')} |")
    if "raw_postgresql_executemany" in i:
        out += ["", f"PostgreSQL `executemany` (pipelined) of the same rows: "
                f"{i['raw_postgresql_executemany']['median_per_s']:,.0f}/s. Raw encrypted "
                f"screenshot writes ({i['raw_screenshots']['files']:,} files of "
                f"{i['raw_screenshots']['bytes'] // 1000} KB, write + rename, no database): "
                f"{shots_raw:,.0f}/s."]
    return out


def _grpc(r: dict[str, Any]) -> list[str]:
    g = r.get("grpc")
    if not g:
        return []
    out = ["", "#### Through gRPC: stored captures/s at 50 streams", "",
           "Simulated agents (2 processes, one mTLS `Connect` stream each, bundles verified) "
           "send the mix in batches, at most 10 unacknowledged per stream; the clock stops at "
           "the last `Ack` (sent after commit). With two collectors, each simulator process "
           "connects its agents to one of them. CPU is user + system of the collector "
           "processes and of the whole PostgreSQL process tree over the bursts.", "",
           "| store | collector processes | stored/s (median) | runs | acked / stored | "
           "collector CPU % of a core | PostgreSQL CPU % | collector CPU µs/capture | "
           "PostgreSQL CPU µs/capture | back-offs |",
           "|---|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for c in g["cases"]:
        runs = ", ".join(f"{x['captures_per_s']:,.0f}" for x in c["runs"])
        out.append(f"| {c['backend']} | {c['processes']} | **{c['median_per_s']:,.0f}** | "
                   f"{runs} | {c['acked']:,} / {c['stored']:,} | "
                   f"{_f(c.get('collectors_cpu_percent'))} | "
                   f"{_f(c.get('postgresql_cpu_percent'))} | "
                   f"{_f(c.get('collectors_cpu_us_per_capture'), '.1f')} | "
                   f"{_f(c.get('postgresql_cpu_us_per_capture'), '.1f')} | "
                   f"{sum(x['backoffs'] for x in c['runs'])} |")
    if "scaling_ratio" in g:
        out += ["", f"Scaling ratio, 2 collector processes / 1 on PostgreSQL: "
                f"**{g['scaling_ratio']:.2f}**. Every process (collectors, PostgreSQL, "
                "simulators) shares the same cores, so this is a floor, not the ratio on a "
                "server where each collector has its own core."]
    return out


def _profile(r: dict[str, Any]) -> list[str]:
    s1 = _case(r, "sqlite-1")
    prof = s1["runs"][0].get("profile") if s1 else None
    if not prof:
        return []
    if "threads" not in prof:
        return ["", f"Profile of the SQLite collector: {prof.get('missing')}"]
    out = ["", "#### Where the SQLite collector's time goes (py-spy, first gRPC burst)", "",
           "| thread | busy / wall | busiest lines (share of the thread's busy samples) |",
           "|---|---:|---|"]
    for name, t in prof["threads"].items():
        if t["busy_samples"]:
            top = "; ".join(f"{share:.0%} `{frame}`" for share, frame in t["top"][:5])
            out.append(f"| {name.split(': ', 1)[-1]} | {t.get('busy_of_wall', 0):.0%} | "
                       f"{top} |")
    return out


def _fanout(r: dict[str, Any]) -> list[str]:
    f = r.get("fanout")
    if not f:
        return []
    out = ["", "#### Rule fan-out and connected agents (one collector, SQLite)", "",
           "`vigil-collector rules publish` (the real CLI, its own process) → every connected "
           "agent has received the bundle, verified its signature and sent `RulesAck` → "
           "the collector has STORED every ack (the headline). Connected agents idle on "
           "heartbeats (every 30 s, random phase).", "",
           "| agents | connect s | collector RSS MiB (KiB per agent over the "
           f"{f['rss_base_mib']:.0f} MiB start) | idle CPU % | all acked s (median) | "
           "all acks stored s (median) | runs (stored) |", "|---:|---:|---|---:|---:|---:|---|"]
    for st in f["stages"]:
        runs = ", ".join(_f(x["all_stored_s"], ".2f") for x in st["fanout"]["runs"])
        per = (st["idle"]["rss_mib"] - f["rss_base_mib"]) * 1024 / st["n"]
        out.append(f"| {st['n']:,} | {st['connect']['seconds']:.1f} | "
                   f"{st['idle']['rss_mib']:,.0f} ({per:.0f}) | "
                   f"{st['idle']['cpu_percent']:.1f} | "
                   f"{_f(st['fanout']['median_all_acked_s'], '.2f')} | "
                   f"{_f(st['fanout']['median_all_stored_s'], '.2f')} | {runs} |")
    return out


def _pages(r: dict[str, Any]) -> list[str]:
    p = r.get("pages")
    if not p:
        return []
    out = ["", f"#### Console pages at {p['size']:,} captures, warm and cold", "",
           f"{p['fill']['queue_items']:,} queue items ({p['visible_items']:,} visible to the "
           f"DSL of one of 3 sites); SQLite file {p['sqlite_db_mb']} MB"
           + (f", PostgreSQL database {p['postgresql_fill']['db_mb']} MB (same rows, "
              "monthly partitions)" if "postgresql_fill" in p else "") + ". Full HTTP stack "
           "in process (TestClient). *Cold* (per timed request): SQLite: the connection's "
           "page cache freed (`PRAGMA shrink_memory`) and the database, -wal and -shm files "
           "dropped from the OS page cache (`posix_fadvise(POSIX_FADV_DONTNEED)`); "
           "PostgreSQL: server stopped (shared buffers gone), every file of the cluster "
           "dropped from the OS page cache the same way, server started, pool reconnected. "
           "The app (templates, session) stays warm.", "",
           "| backend | page | URL | warm median / p95 ms | cold median / p95 ms |",
           "|---|---|---|---:|---:|"]
    names = _PAGE_NAMES
    for be in ("sqlite", "postgresql"):
        if be not in p:
            continue
        info = p[be]["paging"]
        for k, v in p[be].items():
            if not isinstance(v, dict) or "warm" not in v:
                continue
            label = names.get(k, k)
            if k == "deep":
                label = f"deep page {info['deep_page']:,} ({info['paging']} paging)"
            out.append(f"| {be} | {label} | `{v['url'][:60]}` | {v['warm']['median_ms']} / "
                       f"{v['warm']['p95_ms']} | {v['cold']['median_ms']} / "
                       f"{v['cold']['p95_ms']} |")
    for be in ("sqlite", "postgresql"):
        if be in p:
            ev = p[be]["cold_evidence"]
            first = ev.get("first") or {}
            out.append("")
            out.append(f"{be}: before the first cold request "
                       f"{_f((first.get('resident_before') or 0) * 100, '.0f')} % of the "
                       f"files were in the page cache, after the drop at most "
                       f"{_f((ev.get('max_resident_after_drop') or 0) * 100, '.1f')} % "
                       f"(util-linux `fincore`, {ev['samples']} cold samples)"
                       + (f"; the deep page was reached by following {info_n(p, be)} "
                          "'next' links" if p[be]["paging"]["paging"] == "keyset" else "")
                       + ". "
                       + ("No pupil page in the console yet: the pupil row times the queue "
                          "filtered to one pupil's name." if not p[be]["paging"]["pupil_page"]
                          else ""))
    return out


def info_n(p: dict[str, Any], be: str) -> str:
    return f"{p[be]['paging']['deep_page'] - 1:,}"


def sizing(r: dict[str, Any]) -> list[list[str]]:
    """Rows [quantity, value, arithmetic] derived from the measured numbers (empty when the
    parts they need did not run)."""
    rows: list[list[str]] = []
    p1, p2 = _case(r, "postgresql-1"), _case(r, "postgresql-2")
    small, big = _fan(r)
    c_us = pg_us = None
    if p1 and p1.get("collectors_cpu_us_per_capture"):
        c_us, pg_us = p1["collectors_cpu_us_per_capture"], p1["postgresql_cpu_us_per_capture"]
        per_core = 1e6 / c_us
        rows.append(["collector CPU per stored capture (PostgreSQL store, 1 process)",
                     f"{c_us:.1f} µs", "collector CPU s over the bursts / captures acked"])
        rows.append(["PostgreSQL CPU per stored capture", f"{pg_us:.1f} µs",
                     "PostgreSQL process tree CPU s over the bursts / captures acked"])
        rows.append(["collector processes per core", "1",
                     "one GIL per process (stream handling, validation and the writer share "
                     f"it); here one process used {p1['collectors_cpu_percent']:.0f} % of a "
                     "core while sharing the cores with PostgreSQL and the simulators"])
        rows.append(["stored captures/s per collector process with a core of its own",
                     f"{per_core:,.0f}/s", f"10⁶ / {c_us:.1f} µs"])
        pg_core = 1e6 / pg_us
        rows.append(["stored captures/s one PostgreSQL core sustains", f"{pg_core:,.0f}/s",
                     f"10⁶ / {pg_us:.1f} µs"])
        rows.append(["where PostgreSQL becomes the limit",
                     f"{c_us / pg_us:.1f} collector processes per PostgreSQL core",
                     f"{pg_core:,.0f} / {per_core:,.0f}; past that, more collectors add no "
                     "ingest: PostgreSQL needs more cores (or a second database per trust)"])
        if p2:
            rows.append(["measured 2 / 1 collector processes here",
                         f"{p2['median_per_s']:,.0f} / {p1['median_per_s']:,.0f} = "
                         f"{p2['median_per_s'] / p1['median_per_s']:.2f}",
                         f"{r.get('machine', {}).get('cores', '?')} cores shared by collectors, "
                         "PostgreSQL and simulators"])
    if big:
        kib = (big["idle"]["rss_mib"] - r["fanout"]["rss_base_mib"]) * 1024 / big["n"]
        per_proc_mem = int(RSS_BUDGET_MIB * 1024 / kib) if kib > 0 else None
        rows.append(["RSS per connected agent", f"{kib:.0f} KiB",
                     f"({big['idle']['rss_mib']:,.0f} - {r['fanout']['rss_base_mib']:.0f} MiB)"
                     f" / {big['n']:,} agents"])
        if per_proc_mem:
            rows.append(["agents per collector process (memory)", f"{per_proc_mem:,}",
                         f"{RSS_BUDGET_MIB:,.0f} MiB budget / {kib:.0f} KiB"])
        idle_core_per_agent = big["idle"]["cpu_percent"] / 100 / big["n"]
        rows.append([f"idle CPU for {DEVICES:,} devices", f"{DEVICES * idle_core_per_agent:.1f}"
                     " cores", f"{big['idle']['cpu_percent']:.1f} % of a core at "
                     f"{big['n']:,} agents x {DEVICES:,} / {big['n']:,} (heartbeats every "
                     f"{HEARTBEAT_S:.0f} s: {DEVICES / HEARTBEAT_S:,.0f}/s)"])
        t_big = big["fanout"]["median_all_stored_s"]
        t_small = small["fanout"]["median_all_stored_s"] if small is not big and small else None
        if t_big and t_small and big["n"] > small["n"]:
            slope = (t_big - t_small) / (big["n"] - small["n"])
            fixed = max(t_small - slope * small["n"], 0.0)
            rows.append(["fan-out cost per agent (one process)", f"{slope * 1e3:.3f} ms",
                         f"({t_big:.2f} - {t_small:.2f} s) / ({big['n']:,} - "
                         f"{small['n']:,}); fixed part {fixed:.2f} s (CLI, poll wake-up)"])
            budget = TARGETS["fanout_10k_s"] - fixed
            per_proc_fan = int(budget / slope) if budget > 0 and slope > 0 else None
            if per_proc_fan:
                rows.append(["agents per process for fan-out ≤ 5 s", f"{per_proc_fan:,}",
                             f"(5 - {fixed:.2f} s) / {slope * 1e3:.3f} ms"])
        else:
            per_proc_fan = None
        idle_cores = DEVICES * idle_core_per_agent
        cpu_cores = idle_cores
        if c_us and pg_us:
            peak = DEVICES * PEAK_RATE
            rows.append([f"peak ingest of {DEVICES:,} devices (assumed {PEAK_RATE}/s each, the "
                         "scale scan's load rate)", f"{peak:,.0f} captures/s",
                         f"{DEVICES:,} x {PEAK_RATE}"])
            rows.append(["… collector cores for it", f"{peak * c_us / 1e6:.2f}",
                         f"{peak:,.0f} x {c_us:.1f} µs"])
            rows.append(["… PostgreSQL cores for it", f"{peak * pg_us / 1e6:.2f}",
                         f"{peak:,.0f} x {pg_us:.1f} µs"])
            cpu_cores += peak * c_us / 1e6
        limits = [(f"{per_proc_mem:,} agents by memory", math.ceil(DEVICES / per_proc_mem))
                  if per_proc_mem else None,
                  (f"{per_proc_fan:,} agents by fan-out", math.ceil(DEVICES / per_proc_fan))
                  if per_proc_fan else None,
                  (f"{cpu_cores:.1f} cores of idle + peak work", math.ceil(cpu_cores))]
        found = [x for x in limits if x]
        need = max(n for _, n in found)
        rows.append([f"collector processes (= cores) for {DEVICES:,} devices", f"**{need}**",
                     "max(" + ", ".join(f"{n} ({why})" for why, n in found) + "); fan-out "
                     "runs in parallel in every process (NOTIFY reaches each)"])
    return rows


def render(r: dict[str, Any]) -> str:
    m = r.get("machine", {})
    pg = r.get("postgresql", {}).get("settings", {})
    la = r.get("load_average_start")
    out = ["## Trust scale: SQLite and PostgreSQL side by side", "",
           ("_Quick run (reduced sizes): the harness works; these are not the numbers._\n"
            if r.get("quick") else "")
           + f"One run of `{r.get('command', 'python -m bench trust')}`"
           + (f" on {m.get('cpu')}, {m.get('cores')} cores, {m.get('date')}" if m else "")
           + (f"; load average at start {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f}" if la else "")
           + ". Collectors, PostgreSQL and the simulators share these cores. PostgreSQL: a "
           "server started for the run (Debian binaries, "
           + ", ".join(f"{k}={v}" for k, v in pg.items()) + ")"
           + (f" **not run: {r['postgresql']['missing']}**"
              if r.get("postgresql", {}).get("missing") else "") + ". Parts run: "
           + ", ".join(r.get("parts", [])) + ".", "", "#### Targets", "", *_targets(r), *_missed(r)]
    out += _ingest(r) + _grpc(r) + _profile(r) + _fanout(r) + _pages(r)
    rows = sizing(r)
    if rows:
        out += ["", "#### Sizing, derived from the numbers above", "",
                "| quantity | value | arithmetic |", "|---|---|---|"]
        out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
        out += ["", f"Assumed, not measured: {DEVICES:,} devices, heartbeat every "
                f"{HEARTBEAT_S:.0f} s, peak {PEAK_RATE} captures/s per device, "
                f"{RSS_BUDGET_MIB:,.0f} MiB per collector process; linear fan-out cost per "
                "agent between the two measured fleet sizes. Everything else is from this "
                "run."]
    out += ["", "How it is measured, and what a missed target means: "
            "[benchmarks-method.md](benchmarks-method.md#the-trust-benchmark)."]
    return "\n".join(out) + "\n"
