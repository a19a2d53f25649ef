"""Rules benchmark: per-keystroke cost, bulk throughput, compile time and memory.

    python -m bench rules            # 100, 1k, 10k, 20k, 100k phrases + the default library
    python -m bench rules --quick    # 100 and 1k only (CI keeps the harness alive)

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
import random
import statistics
import string
import time
import tracemalloc
from pathlib import Path
from typing import Any

import ahocorasick

import rules
from rules.lexicon import load_words
from rules.normalise import normalise
from rules.ruleset import phrase_key

SIZES = [100, 1_000, 10_000, 20_000, 100_000]
QUICK = [100, 1_000]
TEXT_CHARS = 60_000
TIMED_KEYS = 20_000
CONTEXT_CHARS = 120
CONTEXTS, CONTEXTS_QUICK = 3_000, 300


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


def _per_key(matcher: rules.StreamMatcher, text: str) -> tuple[float, float]:
    """Median and p99 cost of one feed() in microseconds, timer overhead subtracted."""
    clock = time.perf_counter_ns
    overhead = statistics.median([-(clock() - clock()) for _ in range(20_000)])
    samples = []
    feed = matcher.feed
    for ch in text[:TIMED_KEYS]:
        t0 = clock()
        feed(ch)
        samples.append(clock() - t0 - overhead)
    samples.sort()
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000


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
        if out[s] is not None:
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


def _measure(name: str, ruleset: rules.RuleSet, text: str) -> dict[str, Any]:
    gc.collect()
    t0 = time.perf_counter()
    ruleset.compiled()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rules.RuleSet(ruleset.rules).compiled()  # best of two: the box is shared
    compile_s = min(compile_s, time.perf_counter() - t0)
    tracemalloc.start()
    rules.RuleSet(ruleset.rules).compiled()  # same build again, measured for memory
    mem = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    matcher = ruleset.matcher()
    _bulk(matcher, text)  # warm the lazily built transitions, like a running agent
    median, p99 = _per_key(ruleset.matcher(), text)
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
        "phrases": sum(len(r.phrases) for r in ruleset.rules),
        "states": ruleset.automaton_states,
        "compile_s": round(compile_s, 3),
        "memory_mib": round(mem / 2**20, 1),
        "key_median_us": round(median, 3),
        "key_p99_us": round(p99, 3),
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
        rows.append(_measure(f"synthetic {size:,}", _ruleset(plist), _text(rng, vocab, plist)))
        print(rows[-1], flush=True)
    lib = rules.load_library(rules.DEFAULT_LIBRARY)
    english = "\n".join(_benign_lines()) + "\n"  # one context per line, as if Enter
    english = english * (TEXT_CHARS // len(english) + 1)
    rows.append(_measure("default library", lib, english[:TEXT_CHARS]))
    print(rows[-1], flush=True)
    context = _measure_context(rng, CONTEXTS_QUICK if args.quick else CONTEXTS)
    print(context, flush=True)
    return {"rows": rows, "quick": args.quick, "context": context}


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


def markdown(results: dict[str, Any]) -> str:
    cols = ["phrase set", "phrases", "states", "compile s", "memory MiB", "key median µs",
            "key p99 µs", "bulk µs/char", "Mchar/s", "backspace µs", "automaton-only µs/char",
            "pyahocorasick µs/char", "pyahocorasick MiB"]
    head = "| " + " | ".join(cols) + " |\n|---|" + "---:|" * (len(cols) - 1)
    lines = ["### Rules matcher", "",
             "Per-keystroke cost is one `StreamMatcher.feed()` (normalise + automaton + undo "
             "snapshot), timed one key at a time over 20k keys, timer overhead subtracted. "
             "Bulk is the mean over 60k typed characters (best of 3 passes; compile is best "
             "of 2: the 2-core box is shared). "
             "*Automaton-only* and *pyahocorasick* walk the same pre-normalised text with no "
             "normalisation or undo (pyahocorasick: `iter('')` + `set(ch)` per key). Memory is "
             "the tracemalloc peak while compiling.", "", head]
    for r in results["rows"]:
        lines.append(
            f"| {r['name']} | {r['phrases']:,} | {r['states']:,} | {r['compile_s']} | "
            f"{r['memory_mib']} | {r['key_median_us']} | {r['key_p99_us']} | "
            f"{r['bulk_us_per_char']} | {r['bulk_mchar_s']} | {r['backspace_us']} | "
            f"{r['ours_step_us']} | {r['pyahocorasick_us']} | {r['pyahocorasick_mib']} |"
        )
    at20k = [r for r in results["rows"] if r["phrases"] == 20_000]
    if at20k:
        med = at20k[0]["key_median_us"]
        verdict = "met" if med <= 1.0 else "MISSED"
        lines += ["", f"Target (median ≤ 1 µs per keystroke at 20k phrases): **{verdict}** "
                  f"({med} µs). The per-key median grows with phrase count mostly through "
                  "cache misses in the automaton (one Python dict per state: ~330 bytes a "
                  "state); pyahocorasick's C trie is ~8x smaller but cannot undo a key."]
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
