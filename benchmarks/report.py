"""What every ``make bench-<area>`` does with its figures: write them to
``<CRM_HOME>/bench/<area>.json`` with where they were measured (commit, date, machine), print each
beside its target and whether it was met, and fail (exit 1) when one was not.

``python -m benchmarks.report`` (``make bench-report``) writes ``docs/benchmarks.md`` from those
files: the only place the project quotes a measured figure."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

from crm.settings import REPO_ROOT

# the areas in the order make bench runs them, and what each measures (the page's headings)
AREAS = {
    "extract": "a day's extraction against fetching alone; the history load; memory",
    "dbt": "the dbt build on 1,000,000 customers: full, one more day, features vs hand SQL",
    "scoring": "scoring and arbitration of 1,000,000 customers x 12 campaigns; capture of the oracle",
    "serving": "snapshot load, memory and API look-ups for 1,000,000 customers",
    "backfill": "a 30-day backfill through Airflow against each date computed alone in a fresh home",
    "daily": "crm_daily end to end through Airflow for the day after a cached history",
    "daily-postgres": "the same day on the embedded PostgreSQL warehouse (100,000 customers; no target: beside DuckDB's)",
    "loop": "14 closed-loop days on 100,000 customers: each day's champion on the first day's pool, capture per "
    "day, each campaign's uplift estimated vs true",
}
PAGE = REPO_ROOT / "docs" / "benchmarks.md"


def own_peak_rss_mb() -> float:
    """This process's own peak resident size, in MB: ``VmHWM`` of /proc/self/status, which belongs
    to the process's address space. ``getrusage``'s ``ru_maxrss`` does not: on Linux a forked child
    starts from its parent's resident size and keeps it across ``exec``, so a bench that had built a
    5.9 GB bank reported 5,896 MB for a step that used 1,588 (issue 15)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource  # not Linux: the best the platform offers

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def commit() -> str:
    """The commit the figures were measured on; ``+changes`` when the working tree differed from it."""
    git = shutil.which("git")
    if git is None:
        return "unknown (git is not installed)"
    try:
        head = subprocess.run([git, "rev-parse", "--short=10", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        # the page this module writes is not a change to what is measured
        dirty = subprocess.run([git, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                f":!{PAGE.relative_to(REPO_ROOT)}"], cwd=REPO_ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + ("+changes" if dirty else "")


def machine() -> str:
    """The machine in one line: CPU model, cores, memory, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(
            int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")
        )
        memory = f"{mem / 1024**2:.0f} GiB"
    except (OSError, StopIteration):
        memory = "memory unknown"
    return f"{cpu}, {os.cpu_count()} cores, {memory}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def verdicts(figures: dict, at_most: dict[str, float], at_least: dict[str, float]) -> dict[str, dict]:
    """Each target's figure, bound and whether it was met; a target whose figure is missing is not met."""
    out = {}
    for op, bounds in (("<=", at_most), (">=", at_least)):
        for name, bound in bounds.items():
            value = figures.get(name)
            met = value is not None and (value <= bound if op == "<=" else value >= bound)
            out[name] = {"op": op, "target": bound, "value": value, "met": met}
    return out


def report(area: str, figures: dict, at_most: dict[str, float], at_least: dict[str, float], home: Path) -> int:
    """Write and print ``figures``; ``at_most`` / ``at_least`` are the targets by figure name.
    ``home`` is the data directory the bench was started for (a bench may move CRM_HOME while it runs).
    Returns the bench's exit code: 0 when every target was met, else 1."""
    targets = verdicts(figures, at_most, at_least)
    missed = [name for name, t in targets.items() if not t["met"]]
    out = home / "bench" / f"{area}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "area": area,
        "commit": commit(),
        "measured_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "machine": machine(),
        "figures": figures,
        "targets": targets,
        "met": not missed,
    }
    out.write_text(json.dumps(record, indent=2))
    print(f"\nbench-{area} ({out}; commit {record['commit']})")
    width = max(len(name) for name in figures) + 2
    for name, value in figures.items():
        t = targets.get(name)
        verdict = f"  target {t['op']} {t['target']}: {'met' if t['met'] else 'NOT met'}" if t else ""
        print(f"  {name:<{width}}{value}{verdict}")
    if missed:
        print(f"bench-{area}: {len(missed)} target(s) NOT met: {', '.join(missed)}")
        return 1
    print(f"bench-{area}: every target met")
    return 0


def _cell(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, dict):
        return "; ".join(f"{k} {_cell(v)}" for k, v in value.items())
    return str(value).replace("|", "\\|")


def render(bench_dir: Path, only: list[str] | None = None, page: str | None = None) -> str:
    """``docs/benchmarks.md``: every area's last figures from ``bench_dir``, each with its commit,
    date and machine; an area never run says so (never a figure typed by hand). With ``only``, those
    areas are rendered and the others' sections are kept as ``page`` (the page as it is) has them:
    areas measured on another checkout keep their figures and provenance."""
    kept = _sections(page or "") if only else {}
    lines = [
        "# Benchmark figures",
        "",
        "Generated by `make bench-report` from `.crm/bench/*.json`, which each `make bench-<area>` writes;",
        "do not edit by hand. Each area gives the commit it was measured on (`+changes`: with uncommitted",
        "changes), when, and on what machine. A target missed makes its `make bench-<area>` exit 1.",
        "",
    ]
    for area, what in AREAS.items():
        if only and area not in only and area in kept:
            lines += kept[area]
            continue
        lines += [f"## bench-{area}", "", f"`make bench-{area}`: {what}.", ""]
        path = bench_dir / f"{area}.json"
        if not path.exists():
            lines += ["Not measured yet in this checkout: run `make bench-" + area + "`.", ""]
            continue
        record = json.loads(path.read_text())
        if "figures" not in record:  # written before the figures had a provenance
            lines += [f"`{path.name}` predates provenance (commit, date, machine): run `make bench-{area}` again.", ""]
            continue
        status = "every target met" if record["met"] else "**a target was NOT met**"
        lines += [
            f"Commit `{record['commit']}`, measured {record['measured_at']} on {record['machine']}: {status}.",
            "",
            "| figure | value | target | met |",
            "| --- | ---: | --- | --- |",
        ]
        for name, value in record["figures"].items():
            t = record["targets"].get(name)
            target = f"{t['op']} {_cell(t['target'])}" if t else ""
            met = ("yes" if t["met"] else "**no**") if t else ""
            lines.append(f"| {name} | {_cell(value)} | {target} | {met} |")
        lines.append("")
    return "\n".join(lines)


def _sections(page: str) -> dict[str, list[str]]:
    """The page's section of each area: its lines from its heading to the next heading."""
    sections: dict[str, list[str]] = {}
    area = None
    for line in page.splitlines():
        if line.startswith("## bench-"):
            area = line.removeprefix("## bench-").strip()
            sections[area] = []
        if area is not None:
            sections[area].append(line)
    return sections


def main(argv: list[str] | None = None) -> int:
    import argparse

    from crm.settings import get_settings

    parser = argparse.ArgumentParser(description="write docs/benchmarks.md from <CRM_HOME>/bench/*.json")
    parser.add_argument("--out", type=Path, default=PAGE)
    parser.add_argument("--only", nargs="*", choices=list(AREAS), help="render these areas, keep the page's others")
    args = parser.parse_args(argv)
    page = render(get_settings().home / "bench", args.only, args.out.read_text() if args.only else None)
    args.out.write_text(page + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
