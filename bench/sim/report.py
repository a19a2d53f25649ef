"""Markdown for ``python -m bench scale`` (spliced into docs/benchmarks.md)."""

from __future__ import annotations

from typing import Any

__all__ = ["render"]


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "**no**")


def _f(x: float | None, fmt: str = ",.0f", unit: str = "") -> str:
    return "n/a" if x is None else f"{x:{fmt}}{unit}"


def _stage(r: dict[str, Any], n: int) -> dict[str, Any] | None:
    for st in r.get("fleet", {}).get("stages", []):
        if st["n"] == n:
            return dict(st)
    return None


def _summary_rows(r: dict[str, Any]) -> list[str]:
    rows = ["| measure | result | target | met |", "|---|---|---|---|"]
    e = r.get("e2e")
    if e and "upper_ms" in e:
        up, lo = e["upper_ms"], e["lower_ms"]
        rows.append(f"| end to end: phrase typed by xdotool → row in the collector's store, "
                    f"p50 / p99 (n={e['stored']}, {e['lost']} lost) | {up['p50_ms']:.1f} / "
                    f"{up['p99_ms']:.1f} ms (from before the key's xdotool starts; "
                    f"{lo['p50_ms']:.1f} / {lo['p99_ms']:.1f} ms from after it exits) | "
                    f"p99 ≤ 100 ms | {_met(up['p99_ms'] <= 100)} |")
    elif e:
        rows.append(f"| end to end | not measured: {e.get('missing')} | p99 ≤ 100 ms | - |")
    for g in r.get("ingest", {}).get("by_streams", []):
        rows.append(f"| stored captures/s, {g['streams']:,} concurrent streams (median of "
                    f"{len(g['runs'])}) | {g['median_per_s']:,.0f}/s | ≥ 50,000/s | "
                    f"{_met(g['median_per_s'] >= 50_000)} |")
        rows.append(f"| … ratio to raw `executemany` into the same schema, same run "
                    f"({g['raw_median_per_s']:,.0f}/s) | {g['ratio']:.2f} | ≥ 0.35 | "
                    f"{_met(g['ratio'] >= 0.35)} |")
        so = g.get("store_only")
        if so:
            rows.append(f"| … the collector's `Store.ingest` alone (triage + SQL, no gRPC), same "
                        f"mix, {so['commit']:,} per commit | {so['captures_per_s']:,.0f}/s | - "
                        f"| - |")
    stages = r.get("fleet", {}).get("stages", [])
    if stages:
        top = stages[-1]
        idle = top["idle"]
        rows.append(f"| collector with {top['n']:,} idle connected agents: RSS / CPU | "
                    f"{idle['rss_mib']:,.0f} MiB / {idle['cpu_percent']:.1f} % of one core "
                    f"({idle['alive']:,} streams alive) | ≤ 2 GB | "
                    f"{_met(idle['rss_mib'] <= 2048) if top['n'] >= 10_000 else '- (N < 10k)'} |")
        for n in (1000, 10_000):
            st = _stage(r, n)
            if st is None:
                rows.append(f"| rule fan-out to {n:,} agents | not measured | "
                            f"{'≤ 5 s' if n == 10_000 else '-'} | - |")
                continue
            med = st["fanout"].get("median_all_stored_s")
            rows.append(f"| rule fan-out: `rules publish` → every one of {n:,} agents "
                        f"verified the bundle and its RulesAck is stored "
                        f"(median of {len(st['fanout']['runs'])}) | {_f(med, '.2f', ' s')} | "
                        f"{'≤ 5 s' if n == 10_000 else '-'} | "
                        f"{_met(med is not None and med <= 5) if n == 10_000 else '-'} |")
    o = r.get("others", {})
    ag = o.get("agent", {})
    if "process" in ag:
        p = ag["process"]
        rows.append(f"| agent RSS idle / CPU idle / CPU typing 10 keys/s (bench agent) | "
                    f"{p['rss_idle_mb']:.1f} MB / {p['idle_cpu_percent']:.3f} % / "
                    f"{p['typing_cpu_percent']:.3f} % | ≤ 45 MB / ≤ 0.1 % / ≤ 0.5 % | "
                    f"{_met(p['rss_idle_mb'] <= 45)} / {_met(p['idle_cpu_percent'] <= 0.1)} "
                    f"/ {_met(p['typing_cpu_percent'] <= 0.5)} |")
    elif ag:
        rows.append(f"| agent footprint | missing: {ag.get('missing')} | ≤ 45 MB | - |")
    ru = o.get("rules", {})
    if "rows" in ru:
        synth = [x for x in ru["rows"] if x["name"].startswith("synthetic")]
        cells = "; ".join(f"{x['phrases']:,}: {x['key_median_us']} µs "
                          f"(pyahocorasick {x['pyahocorasick_us']} µs)" for x in synth)
        rows.append(f"| matcher, per keystroke median vs phrases (bench rules) | {cells} "
                    f"| - | - |")
    elif ru:
        rows.append(f"| matcher | missing: {ru.get('missing')} | - | - |")
    for gp in r.get("growth", []):
        rows.append(f"| growth: {gp['size']:,} captures stored: ingest / queue page median "
                    f"| {gp['ingest']['median_per_s']:,.0f}/s / "
                    f"{gp['pages']['queue']['median_ms']} ms | - | - |")
    return rows


def _fleet_table(r: dict[str, Any]) -> list[str]:
    f = r.get("fleet")
    if not f:
        return []
    lines = [
        "", "#### Fleet scan (one collector; agents added stage by stage)", "",
        f"Each stage: connect the new agents ({f['workers']} simulator processes, one mTLS "
        f"connection each), idle window, load window ({f['rate_per_agent']} captures/s per "
        f"agent, one capture per batch as an agent sends a fresh hit), then `rules publish`.",
        "",
        "| agents | connect s (agents/s) | collector RSS MiB | idle CPU % | heartbeats in "
        "window | load captures sent / acked | ack latency p50 / p99 ms | load CPU % | "
        "fan-out: first bundle / all acked / acks stored s | simulator RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for st in f["stages"]:
        c, i, ld = st["connect"], st["idle"], st["load"]
        lat = ld["ack_latency"]
        runs = st["fanout"]["runs"]
        fo = "n/a"
        if runs:
            def med(key: str, runs: list[dict[str, Any]] = runs) -> float | None:
                xs = sorted(x[key] for x in runs if x[key] is not None)
                return xs[len(xs) // 2] if xs else None
            fo = (f"{_f(med('first_bundle_s'), '.2f')} / {_f(med('all_acked_s'), '.2f')} / "
                  f"{_f(med('all_stored_s'), '.2f')}")
        lines.append(
            f"| {st['n']:,} | {c['seconds']:.1f} ({_f(c['per_s'])}) | {i['rss_mib']:,.0f} | "
            f"{i['cpu_percent']:.1f} | {i['heartbeats']:,} | {ld['sent']:,} / {ld['acked']:,} | "
            f"{_f(lat.get('p50_ms'), '.1f')} / {_f(lat.get('p99_ms'), '.1f')} | "
            f"{ld['collector_cpu_percent']:.0f} | {fo} | {i['simulator_rss_mib']:,.0f} |")
    return lines


def _ingest_table(r: dict[str, Any]) -> list[str]:
    ing = r.get("ingest")
    if not ing:
        return []
    lines = ["", "#### Ingest bursts", "",
             "| streams | captures | batch | run | stored/s | batch ack p50 / p99 ms | "
             "back-offs / streams ended | collector CPU % | simulator CPU s | "
             "raw executemany/s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for g in ing["by_streams"]:
        for k, (b, raw) in enumerate(zip(g["runs"], g["raw"], strict=False)):
            lat = b["batch_ack_latency"]
            lines.append(
                f"| {g['streams']:,} | {b['captures']:,} | {b['batch']} | {k + 1} | "
                f"{b['captures_per_s']:,.0f} | {_f(lat.get('p50_ms'), '.0f')} / "
                f"{_f(lat.get('p99_ms'), '.0f')} | {b['backoffs']} / {b.get('reconnects', 0)} | "
                f"{b['collector_cpu_percent']:.0f} | {b['simulator_cpu_s']:.1f} | "
                f"{raw['captures_per_s']:,.0f} |")
    return lines


def _profile(r: dict[str, Any]) -> list[str]:
    found: list[tuple[str, dict[str, Any]]] = []
    for g in r.get("ingest", {}).get("by_streams", []):
        if g["runs"][0].get("profile"):
            found.append((f"first ingest burst at {g['streams']:,} streams",
                          g["runs"][0]["profile"]))
    for st in r.get("fleet", {}).get("stages", []):
        for run in st["fanout"]["runs"][:1]:
            if run.get("profile"):
                found.append((f"first rule fan-out to {st['n']:,} agents", run["profile"]))
    out: list[str] = []
    for what, prof in found:
        if "threads" not in prof:
            out += ["", f"Profile ({what}): {prof.get('missing')}"]
            continue
        out += ["", f"#### Where the collector's time goes: py-spy, {what}", "",
                "| thread | busy / wall | busiest lines (share of the thread's busy samples) |",
                "|---|---:|---|"]
        for name, t in prof["threads"].items():
            if not t["busy_samples"]:
                continue
            top = "; ".join(f"{share:.0%} `{frame}`" for share, frame in t["top"][:5])
            label = name.split(": ", 1)[-1]
            out.append(f"| {label} | {t.get('busy_of_wall', 0):.0%} | {top} |")
    return out


def _growth_table(r: dict[str, Any]) -> list[str]:
    g = r.get("growth")
    if not g:
        return []
    lines = ["", "#### Growth", "",
             "| captures stored | DB MB | ingest stored/s (streams x captures each) "
             "| /queue median / p95 ms | /queue?status=all median / p95 ms |",
             "|---:|---:|---:|---:|---:|"]
    for p in g:
        q, qa = p["pages"]["queue"], p["pages"]["queue_all"]
        b = p["ingest"]["runs"][0]
        lines.append(f"| {p['size']:,} | {p['db_mb']} | {p['ingest']['median_per_s']:,.0f} "
                     f"({b['streams']} x {b['captures'] // b['streams']:,}) | "
                     f"{q['median_ms']} / {q['p95_ms']} | {qa['median_ms']} / {qa['p95_ms']} |")
    return lines


def _e2e_table(r: dict[str, Any]) -> list[str]:
    e = r.get("e2e")
    if not e or "upper_ms" not in e:
        return []
    names = {"key_to_capture_ms": "space key sent → capture built (agent clock)",
             "capture_to_received_ms": "capture built → received by the collector",
             "received_to_visible_ms": "received → committed row seen by a reader",
             "xdotool_ms": "the xdotool process for the key (start → exit)"}
    lines = ["", "#### End to end, split", "", "| step | p50 ms | p99 ms |", "|---|---:|---:|"]
    for k, label in names.items():
        lines.append(f"| {label} | {e[k]['p50_ms']:.1f} | {e[k]['p99_ms']:.1f} |")
    return lines


def render(r: dict[str, Any]) -> str:
    m = r.get("machine", {})
    lines = ["## Scale", ""]
    if m:
        lines += [f"Machine: {m.get('cpu')}, {m.get('cores')} cores (collector, simulators "
                  f"and X server share them), Python {m.get('python')}, {m.get('os')}; "
                  f"{m.get('date')}. Command: `{r.get('command')}`.", ""]
    runs = r.get("part_runs", {})
    if len({v["date"] for v in runs.values()}) > 1:
        lines += ["Recorded part by part: " + "; ".join(
            f"{k} {v['date']}" for k, v in runs.items()) + ".", ""]
    lines += _summary_rows(r)
    lines += ["", "Where a target is missed, the profile, the cause and what limits it are in "
              "[benchmarks-method.md](benchmarks-method.md#findings)."]
    en, mi = r.get("enrolment"), r.get("mint")
    if en:
        lines += ["", f"Enrolment over the wire (`Enrollment.Enroll`, TLS, {en['concurrency']} "
                  f"at a time): {en['enrolled']:,} agents in {en['seconds']:.1f} s = "
                  f"**{en['per_s']:,.0f}/s** ({en['errors']} errors). "
                  + (f"The other {mi['n']:,} agents were minted from the collector's CA and "
                     f"store in this process ({mi['seconds']:.1f} s) to save time; they "
                     f"connect exactly like enrolled ones." if mi and mi["n"] else "")]
    lines += (_fleet_table(r) + _ingest_table(r) + _profile(r) + _growth_table(r)
              + _e2e_table(r))
    notes = r.get("notes")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"
