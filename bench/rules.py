"""Rules benchmark: per-keystroke cost, bulk throughput, rebuild time and memory.

    python -m bench rules            # 100, 1k, 10k, 20k, 100k phrases + the default library
    python -m bench rules --quick    # 100 and 1k only (CI keeps the harness alive)

Per-keystroke cost is timed three ways, each as mean (CPU time), median and p99 (wall time)
of one ``feed()``:
*warm* (text the matcher has already seen once, as the old lazily built automaton likes it),
*unseen* (a second, independently drawn text on the same rule set) and *after update* (a
third text, typed into a rule set built a moment before, with the fold caches emptied too:
the first keystrokes after a rules update or an agent start). Each is the best of five
runs by mean, each run on its own text (the 2-core box is shared). Memory is measured on a
fresh build of the same rules: what stays allocated (tracemalloc, after ``gc.collect()``),
the same after typing 60k keys (a lazily built automaton grows as it is used), the peak
while building, and the resident-set growth of a fresh process building the rule set (RSS
delta: allocator overheads and build garbage the allocator keeps count there).

The context layer (``RuleSet.evaluate``, run once per boundary) is measured separately, on
the shipped library: one call per 120-character context cut from the precision test lines,
a third of the words obfuscated (masked, spaced out, leet, misspelt), every context
different, first on a freshly built rule set (cold: word list, index and lazily built
automaton transitions) and then again (warm).

Phrase sets are synthetic: 2-3 word phrases over a 20,000-word made-up vocabulary, typed text
is words from the same vocabulary with a real phrase every ~100 words, so the automaton walks
partial matches all the time but hits are rare, as in real typing. Each size also runs
pyahocorasick's raw streaming loop (``iter('')`` then ``set(ch)`` per key) over the same,
already-normalised text, for comparison: it does no normalisation, no snapshots and cannot
undo a key.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import string
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ahocorasick

import rules
from rules import matcher as _matcher_mod
from rules import normalise as _normalise_mod
from rules.lexicon import load_words
from rules.normalise import normalise
from rules.ruleset import phrase_key

SIZES = [100, 1_000, 10_000, 20_000, 100_000]
QUICK = [100, 1_000]
TEXT_CHARS = 60_000
TIMED_KEYS = 20_000
CONTEXT_CHARS = 120
CONTEXTS, CONTEXTS_QUICK = 3_000, 300
REPEATS = 5  # per-key timings: best of 5 runs (by mean), each on its own text


def _vocab(rng: random.Random, n: int = 20_000) -> list[str]:
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))))
    return sorted(words)


def _ruleset(phrases: list[str]) -> rules.RuleSet:
    per = 20
    return rules.RuleSet(tuple(
        rules.Rule(id=f"bench.r{i}", category="drugs", severity=2,
                   phrases=tuple(phrases[i : i + per]))
        for i in range(0, len(phrases), per)
    ))


def _text(rng: random.Random, vocab: list[str], phrases: list[str]) -> str:
    out: list[str] = []
    size = 0
    while size < TEXT_CHARS:
        piece = rng.choice(phrases) if rng.random() < 0.01 else rng.choice(vocab)
        out.append(piece)
        size += len(piece) + 1
    return " ".join(out)


def _per_key(matcher: rules.StreamMatcher, text: str) -> dict[str, float]:
    """Mean, median and p99 cost of one feed() in microseconds. Median and p99 are wall
    time per key, timer overhead subtracted. The mean is the thread's CPU time over all the
    keys, less that of the same timing loop without ``feed``: time the shared box gave to
    other processes does not count, garbage collection does (``wall_mean`` counts both)."""
    clock, cpu = time.perf_counter_ns, time.thread_time_ns
    overhead = statistics.median([-(clock() - clock()) for _ in range(20_000)])
    keys = text[:TIMED_KEYS]
    samples: list[int] = []
    c0 = cpu()
    for _ch in keys:  # the timing loop alone, to subtract from the CPU time
        t0 = clock()
        samples.append(clock() - t0 - overhead)
    loop = cpu() - c0
    samples = []
    feed = matcher.feed
    c0 = cpu()
    for ch in keys:
        t0 = clock()
        feed(ch)
        samples.append(clock() - t0 - overhead)
    busy = cpu() - c0 - loop
    wall = statistics.fmean(samples)
    samples.sort()
    return {"mean": round(busy / len(keys) / 1000, 3),
            "median": round(samples[len(samples) // 2] / 1000, 3),
            "p99": round(samples[int(len(samples) * 0.99)] / 1000, 3),
            "wall_mean": round(wall / 1000, 3)}


def _cold_caches() -> None:
    """Empty the process-wide fold caches, as in a freshly started agent."""
    _matcher_mod._SIMPLE.clear()
    _normalise_mod._CACHE.clear()


def _memory(ruleset: rules.RuleSet, text: str) -> dict[str, int]:
    """Bytes a fresh build of ``ruleset`` keeps (tracemalloc): built, after typing ``text``
    into it, and the peak while building."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fresh = rules.RuleSet(ruleset.rules).compiled()
    gc.collect()
    built, peak = tracemalloc.get_traced_memory()
    m = fresh.matcher()
    _bulk(m, text)
    del m
    gc.collect()
    typed = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del fresh
    return {"built": built - base, "typed": typed - base, "peak": peak - base}


_RSS_PROBE = """
import gc, json, os, sys
import rules
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
arg = sys.argv[1]
if arg == "library":
    rs = rules.load_library(rules.DEFAULT_LIBRARY)
else:
    with open(arg) as f:
        rs = rules.RuleSet(tuple(rules.Rule(id=i, category="drugs", severity=2,
                                            phrases=tuple(p)) for i, p in json.load(f)))
gc.collect()
before = rss()
rs.compiled()
gc.collect()
print(rss() - before)
"""


def _rss_delta(ruleset: rules.RuleSet, library: bool) -> int | None:
    """Resident-set growth while a fresh process builds ``ruleset`` (Linux only)."""
    if not Path("/proc/self/statm").exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        arg = "library"
        if not library:
            arg = str(Path(tmp) / "rules.json")
            Path(arg).write_text(json.dumps([[r.id, list(r.phrases)] for r in ruleset.rules]))
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": str(root)}
        got = subprocess.run([sys.executable, "-c", _RSS_PROBE, arg], capture_output=True,
                             text=True, check=True, cwd=root, env=env, timeout=600)
    return int(got.stdout.split()[-1])


def _bulk(matcher: rules.StreamMatcher, text: str) -> tuple[float, int]:
    """Mean microseconds per character feeding the whole text; hits found."""
    feed, hits = matcher.feed, 0
    t0 = time.perf_counter()
    for ch in text:
        if feed(ch):
            hits += 1
    hits += len(matcher.reset())
    return (time.perf_counter() - t0) * 1e6 / len(text), hits


def _raw_loops(ruleset: rules.RuleSet, keys: list[str], text: str) -> dict[str, float]:
    """Automaton-only loops over pre-normalised text: ours vs pyahocorasick."""
    norm = " " + normalise(text) + " "
    aut = ruleset._index.automaton
    step, out, s, n = aut.step, aut.out, aut.start, 0
    t0 = time.perf_counter()
    for c in norm:
        s = step(s, c)
        if s in out:
            n += 1
    ours = (time.perf_counter() - t0) * 1e6 / len(norm)
    a = ahocorasick.Automaton()
    for i, k in enumerate(keys):
        a.add_word(k, i)
    a.make_automaton()
    it, m = a.iter(""), 0
    t0 = time.perf_counter()
    for c in norm:
        it.set(c)
        for _ in it:
            m += 1
    pyac = (time.perf_counter() - t0) * 1e6 / len(norm)
    return {"ours_step_us": round(ours, 3), "pyahocorasick_us": round(pyac, 3),
            "pyahocorasick_mib": round(a.get_stats()["total_size"] / 2**20, 1)}


def _after_update(ruleset: rules.RuleSet, text: str) -> dict[str, float]:
    """Per-key cost of the first keys typed into a rule set built a moment before."""
    _cold_caches()
    updated = rules.RuleSet(ruleset.rules).compiled()
    return _per_key(updated.matcher(), text)


def _best(runs: Iterable[dict[str, float]]) -> dict[str, float]:
    """The run with the lowest mean: contention on the shared box only ever adds time."""
    return min(runs, key=lambda r: r["mean"])


def _measure(name: str, ruleset: rules.RuleSet, text: str, unseen: list[str],
             later: list[str], library: bool = False) -> dict[str, Any]:
    """``text`` is typed to warm up and then timed; each of ``unseen`` is timed on the same
    rule set (never typed before), each of ``later`` on a rule set built just before it."""
    gc.collect()
    t0 = time.perf_counter()
    ruleset.compiled()
    compile_s = time.perf_counter() - t0
    for _ in range(2):  # best of three: the box is shared
        t0 = time.perf_counter()
        rules.RuleSet(ruleset.rules).compiled()
        compile_s = min(compile_s, time.perf_counter() - t0)
    mem = _memory(ruleset, text)
    rss = _rss_delta(ruleset, library)
    phrases = sum(len(r.phrases) for r in ruleset.rules)
    matcher = ruleset.matcher()
    _bulk(matcher, text)  # warm the lazily built transitions, like a running agent
    warm = _best(_per_key(ruleset.matcher(), text) for _ in range(REPEATS))
    fresh_eyes = _best(_per_key(ruleset.matcher(), t) for t in unseen)
    after = _best(_after_update(ruleset, t) for t in later)
    bulk, hits = min(_bulk(ruleset.matcher(), text) for _ in range(3))  # best of 3
    m = ruleset.matcher()
    for ch in text[:2000].replace("\n", " "):
        m.feed(ch)
    t0 = time.perf_counter()
    for _ in range(1000):
        m.backspace()
    backspace = (time.perf_counter() - t0) * 1e6 / 1000
    keys = sorted({phrase_key(p) for r in ruleset.rules for p in r.phrases})
    return {
        "name": name,
        "phrases": phrases,
        "states": ruleset.automaton_states,
        "compile_s": round(compile_s, 3),
        "memory_mib": round(mem["built"] / 2**20, 1),
        "memory_kb_per_phrase": round(mem["built"] / phrases / 1000, 3),
        "typed_kb_per_phrase": round(mem["typed"] / phrases / 1000, 3),
        "build_peak_mib": round(mem["peak"] / 2**20, 1),
        "rss_kb_per_phrase": None if rss is None else round(rss / phrases / 1000, 3),
        "key_mean_us": warm["mean"],
        "key_median_us": warm["median"],
        "key_p99_us": warm["p99"],
        "key_wall_mean_us": warm["wall_mean"],
        "unseen_mean_us": fresh_eyes["mean"],
        "unseen_median_us": fresh_eyes["median"],
        "unseen_p99_us": fresh_eyes["p99"],
        "unseen_wall_mean_us": fresh_eyes["wall_mean"],
        "update_mean_us": after["mean"],
        "update_median_us": after["median"],
        "update_p99_us": after["p99"],
        "update_wall_mean_us": after["wall_mean"],
        "bulk_us_per_char": round(bulk, 3),
        "bulk_mchar_s": round(1 / bulk, 2),
        "backspace_us": round(backspace, 3),
        "hits": hits,
        **min((_raw_loops(ruleset, keys, text) for _ in range(3)),
              key=lambda d: d["ours_step_us"] + d["pyahocorasick_us"]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench rules", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    vocab = _vocab(rng)
    rows = []
    for size in QUICK if args.quick else SIZES:
        phrases: set[str] = set()
        while len(phrases) < size:
            phrases.add(" ".join(rng.choices(vocab, k=rng.randint(2, 3))))
        plist = sorted(phrases)
        texts = [_text(rng, vocab, plist) for _ in range(1 + 2 * REPEATS)]
        rows.append(_measure(f"synthetic {size:,}", _ruleset(plist), texts[0],
                             texts[1 : 1 + REPEATS], texts[1 + REPEATS :]))
        print(rows[-1], flush=True)
    lib = rules.load_library(rules.DEFAULT_LIBRARY)
    english = "\n".join(_benign_lines()) + "\n"  # one context per line, as if Enter
    english = english * (TEXT_CHARS // len(english) + 1)
    rows.append(_measure("default library", lib, english[:TEXT_CHARS],
                         [_typed(rng) for _ in range(REPEATS)],
                         [_typed(rng) for _ in range(REPEATS)], library=True))
    print(rows[-1], flush=True)
    context = _measure_context(rng, CONTEXTS_QUICK if args.quick else CONTEXTS)
    print(context, flush=True)
    return {"rows": rows, "quick": args.quick, "context": context}


def _typed(rng: random.Random) -> str:
    """Unseen text for the library: the test lines shuffled, a third of the words obfuscated,
    one context per line."""
    lines = _benign_lines() + _concerning_lines()
    out: list[str] = []
    while sum(map(len, out)) < TEXT_CHARS:
        rng.shuffle(lines)
        out += [" ".join(_obfuscate(rng, w) if rng.random() < 0.33 else w for w in ln.split())
                for ln in lines]
    return "\n".join(out)[:TEXT_CHARS]


def _obfuscate(rng: random.Random, word: str) -> str:
    if len(word) < 4 or not word.isalpha():
        return word
    how = rng.randrange(4)
    i = rng.randrange(1, len(word) - 1)
    if how == 0:
        return word[:i] + "*" + word[i + 1 :]  # masked
    if how == 1:
        return " ".join(word)  # spaced out
    if how == 2:
        return word.replace("e", "3").replace("a", "4").replace("s", "5")  # leet
    return word[:i] + word[i + 1 :]  # a letter missing


def _contexts(rng: random.Random, n: int) -> list[str]:
    """``n`` different 120-character contexts of realistic, partly obfuscated text."""
    lines = _benign_lines() + _concerning_lines()
    out: list[str] = []
    while len(out) < n:
        rng.shuffle(lines)
        words = " ".join(lines).split()
        text = " ".join(_obfuscate(rng, w) if rng.random() < 0.33 else w for w in words)
        start = rng.randrange(CONTEXT_CHARS)
        out += [text[i : i + CONTEXT_CHARS]
                for i in range(start, len(text) - CONTEXT_CHARS, CONTEXT_CHARS)]
    return out[:n]


def _timed(lib: rules.RuleSet, contexts: list[str]) -> tuple[float, float, int]:
    """Median and p99 microseconds of one ``evaluate()``; contexts that hit."""
    clock, evaluate, samples, hits = time.perf_counter_ns, lib.evaluate, [], 0
    for text in contexts:
        t0 = clock()
        got = evaluate(text)
        samples.append(clock() - t0)
        hits += bool(got)
    samples.sort()
    return (samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000, hits)


def _measure_context(rng: random.Random, n: int) -> dict[str, Any]:
    contexts = _contexts(rng, n)
    gc.collect()
    load_words.cache_clear()  # cold: read the word list as a fresh agent does
    lib = rules.load_library(rules.DEFAULT_LIBRARY)
    t0 = time.perf_counter()
    lib.compiled(context=True)  # the context index: word list, phrase words, automata
    build = time.perf_counter() - t0
    cold_median, cold_p99, hits = _timed(lib, contexts)
    median, p99, _ = min((_timed(lib, contexts) for _ in range(2)), key=lambda r: r[0])
    return {"name": "default library", "contexts": len(contexts), "chars": CONTEXT_CHARS,
            "rules": len(lib.rules), "terms": sum(len(r.phrases) + len(r.weights)
                                                  + len(r.exclusions) for r in lib.rules),
            "build_s": round(build, 3), "cold_median_us": round(cold_median, 1),
            "cold_p99_us": round(cold_p99, 1), "median_us": round(median, 1),
            "p99_us": round(p99, 1), "contexts_hit": hits}


def _benign_lines() -> list[str]:
    path = Path(__file__).resolve().parent.parent / "tests" / "rules" / "data" / "benign.txt"
    if not path.exists():
        return ["the quick brown fox jumps over the lazy dog"]
    return [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]


def _concerning_lines() -> list[str]:
    path = Path(__file__).resolve().parent.parent / "tests" / "rules" / "data" / "concerning.txt"
    if not path.exists():
        return ["i want to kill myself"]
    return [ln.split("\t", 1)[-1] for ln in path.read_text(encoding="utf-8").splitlines()
            if ln and not ln.startswith("#")]


def _kb(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(results: dict[str, Any]) -> str:
    rows = results["rows"]
    cols = ["phrase set", "warm mean µs", "warm median µs", "warm p99 µs", "unseen mean µs",
            "unseen median µs", "unseen p99 µs", "after update mean µs",
            "after update median µs", "after update p99 µs", "bulk µs/char", "backspace µs",
            "automaton-only µs/char", "pyahocorasick µs/char"]
    head = "| " + " | ".join(cols) + " |\n|---|" + "---:|" * (len(cols) - 1)
    lines = ["### Rules matcher", "",
             "Per-keystroke cost is one `StreamMatcher.feed()` (normalise + automaton + undo "
             "snapshot), timed one key at a time over 20k keys, timer overhead subtracted; "
             "the mean is CPU time per key (time the shared box gave to other processes "
             "is left out, garbage collection is not; the wall-clock mean is in "
             "bench/results/rules.json). "
             "*Warm*: text already typed once into the rule set. *Unseen*: a second, "
             "independently drawn text. *After update*: a third text typed into a rule set "
             "built a moment before, fold caches emptied (the first keys after a rules update "
             f"or an agent start). Each is the best of {REPEATS} runs by mean, each on its own "
             "text. Bulk is the mean over 60k typed characters (best of 3 "
             "passes). *Automaton-only* and *pyahocorasick* walk the same pre-normalised text "
             "with no normalisation or undo (pyahocorasick: `iter('')` + `set(ch)` per key).",
             "", head]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['key_mean_us']} | {r['key_median_us']} | {r['key_p99_us']} | "
            f"{r['unseen_mean_us']} | {r['unseen_median_us']} | {r['unseen_p99_us']} | "
            f"{r['update_mean_us']} | {r['update_median_us']} | {r['update_p99_us']} | "
            f"{r['bulk_us_per_char']} | {r['backspace_us']} | {r['ours_step_us']} | "
            f"{r['pyahocorasick_us']} |")
    cols = ["phrases", "states", "rebuild s", "KB/phrase built", "KB/phrase after typing",
            "KB/phrase RSS delta", "build peak MiB", "pyahocorasick KB/phrase"]
    lines += ["", "Memory (KB = 1,000 bytes) is for a fresh build of the same rules: what "
              "stays allocated (tracemalloc, after `gc.collect()`), the same after typing 60k "
              "keys into it, and the resident-set growth of a fresh process while it builds "
              "the rule set (allocator overhead and build garbage the allocator keeps count "
              "there). Rebuild is a fresh `RuleSet(...).compiled()`, best of 3 (the 2-core box "
              "is shared).", "",
              "| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    for r in rows:
        label = f"{r['phrases']:,}" + ("" if r["name"].startswith("synthetic")
                                       else f" ({r['name']})")
        pyac = r["pyahocorasick_mib"] * 2**20 / r["phrases"] / 1000
        lines.append(
            f"| {label} | {r['states']:,} | {r['compile_s']} | "
            f"{_kb(r.get('memory_kb_per_phrase'))} | {_kb(r.get('typed_kb_per_phrase'))} | "
            f"{_kb(r.get('rss_kb_per_phrase'))} | {r.get('build_peak_mib', '-')} | "
            f"{pyac:.3f} |")
    at20k = [r for r in rows if r["phrases"] == 20_000]
    if at20k:
        r = at20k[0]
        worst = max(r["unseen_mean_us"], r["unseen_median_us"], r["update_mean_us"],
                    r["update_median_us"])
        mem = max(r["typed_kb_per_phrase"], r["rss_kb_per_phrase"] or 0)
        lines += ["", f"Targets at 20k phrases: ≤ 1 µs per keystroke, mean and median, on "
                  f"unseen text and just after an update: **{'met' if worst <= 1 else 'MISSED'}"
                  f"** (worst {worst} µs); ≤ 1 KB per phrase resident: "
                  f"**{'met' if mem <= 1 else 'MISSED'}** ({mem} KB, the larger of after "
                  f"typing and RSS delta); rebuild {r['compile_s']} s."]
    c = results.get("context")
    if c:
        verdict = "met" if c["median_us"] < 1000 else "MISSED"
        lines += ["", "### Rules context layer", "",
                  f"One `RuleSet.evaluate()` per {c['chars']}-character context (the call the "
                  "agent makes at each boundary), on the shipped library "
                  f"({c['rules']} rules, {c['terms']:,} terms), over {c['contexts']:,} different "
                  "contexts cut from the precision test lines with a third of the words "
                  "obfuscated (masked, spaced out, leet, misspelt). *Cold* is the first pass "
                  "on a freshly built rule set; *build* is reading the word list and building "
                  "the context index on first use.", "",
                  "| build s | cold median µs | cold p99 µs | median µs | p99 µs | contexts hit |",
                  "|---:|---:|---:|---:|---:|---:|",
                  f"| {c['build_s']} | {c['cold_median_us']} | {c['cold_p99_us']} | "
                  f"{c['median_us']} | {c['p99_us']} | {c['contexts_hit']:,} |", "",
                  f"Target (median well under 1 ms per context): **{verdict}** "
                  f"({c['median_us']} µs)."]
    return "\n".join(lines)
