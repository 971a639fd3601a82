"""Our Helm values against the official Airflow chart's own ``values.schema.json``.

``helm install`` validates the merged values against the chart's schema, but the chart's schema
leaves its top level open: a misspelt or retired top-level key (``webserver:`` on an Airflow 3
chart) is silently ignored there. So this check does what helm does (the chart's defaults, then our
values over them, a ``null`` removing a default) and also refuses any key of ours that the schema
does not define. It needs the chart's directory (``helm pull apache-airflow/airflow --version V
--untar``): the chart is not copied into this repository, and its release site is not reachable from
where ``make test`` runs (decision 0019), so the bank's pipeline runs it as ``crm check-chart-values
--chart DIR`` before every install.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def coalesce(defaults: Any, ours: Any) -> Any:
    """Helm's merge of user values over a chart's: maps merge key by key, anything else replaces,
    and ``null`` deletes the chart's default."""
    if not isinstance(defaults, dict) or not isinstance(ours, dict):
        return ours
    merged = dict(defaults)
    for key, value in ours.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = coalesce(defaults.get(key), value)
    return merged


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            return {}  # an external reference (a Kubernetes type by URL): its fields are not ours to check
        node = schema
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def undefined_keys(schema: dict, values: Any, node: dict | None = None, path: str = "") -> list[tuple[str, bool]]:
    """The key paths of ``values`` that the schema defines nowhere (neither as a property nor through
    patternProperties or a schema for additional properties), each with whether the schema forbids
    it (``additionalProperties: false``, which helm refuses) or merely leaves it open."""
    import re

    node = _resolve(schema, schema if node is None else node)
    if isinstance(values, list):
        items = node.get("items")
        return [
            found
            for i, item in enumerate(values)
            if isinstance(items, dict)
            for found in undefined_keys(schema, item, items, f"{path}[{i}]")
        ]
    if not isinstance(values, dict):
        return []
    found: list[tuple[str, bool]] = []
    branches = [_resolve(schema, b) for b in node.get("anyOf", []) + node.get("oneOf", []) + node.get("allOf", [])]
    properties = dict(node.get("properties", {}))
    for branch in branches:
        properties.update(branch.get("properties", {}))
    listed = "properties" in node or any("properties" in b for b in branches)
    extra = node.get("additionalProperties")
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if key in properties:
            found += undefined_keys(schema, value, properties[key], where)
        elif any(re.search(pattern, key) for pattern in node.get("patternProperties", {})):
            continue
        elif isinstance(extra, dict):
            found += undefined_keys(schema, value, extra, where)
        elif listed and extra is not True:
            found.append((where, extra is False))
    return found


def chart_values_errors(chart: Path, values_file: Path) -> list[str]:
    """Everything wrong with ``values_file`` for the chart unpacked at ``chart``: a top-level key the
    schema does not define (helm would ignore it: a retired or misspelt value) or a nested one it
    forbids, then the schema's own errors on the merged values (a type, an enum, a required key)."""
    return check(chart, values_file)[0]


def chart_values_warnings(chart: Path, values_file: Path) -> list[str]:
    """Nested keys the schema leaves open without listing them: the chart may read them (a schema
    lags its templates at times), or ignore them. Worth a look, not a refusal."""
    return check(chart, values_file)[1]


def check(chart: Path, values_file: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of ``values_file`` for the chart at ``chart``, read and validated once."""
    import jsonschema

    schema = json.loads((chart / "values.schema.json").read_text())
    defaults = yaml.safe_load((chart / "values.yaml").read_text()) or {}
    ours = yaml.safe_load(values_file.read_text()) or {}
    undefined = undefined_keys(schema, ours)
    errors = [f"{key}: not a value the chart defines" for key, forbidden in undefined if forbidden or "." not in key]
    warnings = [
        f"{key}: not listed by the chart's schema" for key, forbidden in undefined if not forbidden and "." in key
    ]
    validator = jsonschema.validators.validator_for(schema)(schema)
    for error in sorted(validator.iter_errors(coalesce(defaults, ours)), key=lambda e: list(map(str, e.path))):
        where = ".".join(str(p) for p in error.absolute_path) or "(the values)"
        errors.append(f"{where}: {error.message}")
    return errors, warnings
