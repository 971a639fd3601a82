"""Every ``make bench-<area>`` fails on a missed target, and ``docs/benchmarks.md`` is written from
what the benches measured, each figure with its commit, date and machine."""

from __future__ import annotations

import json

from benchmarks.report import AREAS, render, report


def test_a_missed_target_fails_the_bench_and_says_which(tmp_path, capsys):
    code = report("serving", {"api_rps": 1500, "api_errors": 3, "api_ratio": 0.51}, {"api_errors": 0},
                  {"api_rps": 2000.0, "api_ratio": 0.5}, tmp_path)  # fmt: skip
    assert code == 1
    out = capsys.readouterr().out
    assert "bench-serving: 2 target(s) NOT met: api_errors, api_rps" in out
    record = json.loads((tmp_path / "bench" / "serving.json").read_text())
    assert record["met"] is False
    assert record["targets"]["api_ratio"] == {"op": ">=", "target": 0.5, "value": 0.51, "met": True}
    assert record["commit"] and record["measured_at"] and "cores" in record["machine"]


def test_targets_met_pass_and_a_missing_figure_is_a_miss(tmp_path):
    assert report("dbt", {"full_build_s": 100.0}, {"full_build_s": 900.0}, {}, tmp_path) == 0
    assert report("dbt", {"full_build_s": 100.0}, {"full_build_s": 900.0, "incremental_s": 60.0}, {}, tmp_path) == 1


def test_the_page_gives_each_figure_its_provenance_and_names_what_was_never_run(tmp_path):
    report("scoring", {"capture": 0.93, "seconds": 41.2}, {"seconds": 60.0}, {"capture": 0.95}, tmp_path)
    page = render(tmp_path / "bench")
    record = json.loads((tmp_path / "bench" / "scoring.json").read_text())
    assert f"Commit `{record['commit']}`, measured {record['measured_at']} on {record['machine']}" in page
    assert "| capture | 0.93 | >= 0.95 | **no** |" in page
    assert "| seconds | 41.2 | <= 60 | yes |" in page
    assert "**a target was NOT met**" in page
    for area in set(AREAS) - {"scoring"}:
        assert f"Not measured yet in this checkout: run `make bench-{area}`." in page


def test_the_page_rewrites_only_the_areas_asked_and_keeps_the_others_as_measured_elsewhere(tmp_path):
    """``make bench-report AREAS=daily``: the areas measured in this checkout are rewritten; the
    others keep the figures and provenance another checkout measured (not 'not measured yet')."""
    report("scoring", {"capture": 0.93}, {}, {}, tmp_path / "elsewhere")
    page = render(tmp_path / "elsewhere" / "bench")
    report("daily", {"daily_run_s": 140.0}, {"daily_run_s": 145.9}, {}, tmp_path / "here")
    rewritten = render(tmp_path / "here" / "bench", ["daily"], page)
    assert "| capture | 0.93 |  |  |" in rewritten  # kept from the other checkout's page
    assert "| daily_run_s | 140.0 | <= 145.9 | yes |" in rewritten
    assert rewritten.count("## bench-") == len(AREAS)
    assert [line for line in rewritten.splitlines() if line.startswith("## ")] == [f"## bench-{a}" for a in AREAS]
