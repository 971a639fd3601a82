"""What every ``make bench-<area>`` does with its figures: write them to
``<CRM_HOME>/bench/<area>.json`` and print them, each beside its target and whether it was met."""

from __future__ import annotations

import json
from pathlib import Path


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


def report(area: str, figures: dict, at_most: dict[str, float], at_least: dict[str, float], home: Path) -> None:
    """Write and print ``figures``; ``at_most`` / ``at_least`` are the targets by figure name.
    ``home`` is the data directory the bench was started for (a bench may move CRM_HOME while it runs)."""
    out = home / "bench" / f"{area}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    print(f"\nbench-{area} ({out})")
    width = max(len(name) for name in figures) + 2
    for name, value in figures.items():
        verdict = ""
        if name in at_most:
            verdict = f"  target <= {at_most[name]}: {'met' if value <= at_most[name] else 'NOT met'}"
        elif name in at_least:
            verdict = f"  target >= {at_least[name]}: {'met' if value >= at_least[name] else 'NOT met'}"
        print(f"  {name:<{width}}{value}{verdict}")
