"""What every ``make bench-<area>`` does with its figures: write them to
``<CRM_HOME>/bench/<area>.json`` and print them, each beside its target and whether it was met."""

from __future__ import annotations

import json
from pathlib import Path


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
