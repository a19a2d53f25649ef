"""The rules benchmark harness runs and reports every column (no timing is asserted)."""

from __future__ import annotations

from bench import rules as bench_rules


def test_quick_benchmark_runs_and_renders() -> None:
    results = bench_rules.main(["--quick"])
    names = [r["name"] for r in results["rows"]]
    assert names == ["synthetic 100", "synthetic 1,000", "default library"]
    for row in results["rows"]:
        assert row["phrases"] > 0 and row["states"] > row["phrases"]
        assert row["key_median_us"] > 0 and row["key_p99_us"] >= row["key_median_us"]
        assert row["pyahocorasick_us"] > 0
        for kind in ("key", "unseen", "update"):  # warm, unseen text, just after an update
            assert row[f"{kind}_mean_us"] > 0 and row[f"{kind}_wall_mean_us"] > 0
            assert 0 < row[f"{kind}_median_us"] <= row[f"{kind}_p99_us"]
        assert 0 < row["memory_kb_per_phrase"] <= row["typed_kb_per_phrase"] + 0.05
        assert row["build_peak_mib"] >= row["memory_mib"] and row["compile_s"] > 0
        assert row["rss_kb_per_phrase"] is None or row["rss_kb_per_phrase"] > 0
    context = results["context"]
    assert context["contexts"] == 300 and context["chars"] == 120
    assert 0 < context["median_us"] <= context["p99_us"] and context["build_s"] > 0
    assert 0 < context["contexts_hit"] < context["contexts"]
    table = bench_rules.markdown(results)
    assert table.count("\n| synthetic") == 2 and "| default library |" in table
    assert "after update median µs" in table and "KB/phrase built" in table
    assert "| 1,000 |" in table and "(default library) |" in table
    assert "### Rules context layer" in table and "cold median µs" in table
