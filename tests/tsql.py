"""What SQL meant for Azure SQL must not contain: constructs DuckDB accepts and T-SQL does not."""

from __future__ import annotations

import re

DUCKDB_ONLY = {
    "a :: cast": re.compile(r"::"),
    "qualify": re.compile(r"\bqualify\b", re.I),
    "ilike": re.compile(r"\bilike\b", re.I),
    "|| concatenation": re.compile(r"\|\|"),
    "limit": re.compile(r"\blimit\s+\d", re.I),
    "boolean literal": re.compile(r"\b(true|false)\b", re.I),
    "interval": re.compile(r"\binterval\b", re.I),
    "list function": re.compile(r"\b(list_\w+|array_length|unnest|struct_pack)\s*\(", re.I),
    "strftime / date_trunc": re.compile(r"\b(strftime|strptime|date_trunc)\s*\(", re.I),
    "regexp function": re.compile(r"\bregexp_\w+\s*\(", re.I),
}


def duckdb_only_constructs(sql: str) -> list[str]:
    """The DuckDB-only constructs in ``sql`` (comments ignored)."""
    code = re.sub(r"--[^\n]*", "", sql)
    return [what for what, pattern in DUCKDB_ONLY.items() if pattern.search(code)]
