"""The README's configuration table, generated from the settings' declarations
(:mod:`crm.settings.groups`): every ``CRM_*`` variable, once, by area, with its default and what it
sets (``crm config-table --write``)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from crm.settings.groups import Concern, Extraction, Model, Orchestration, Platform, Sandbox, Warehouse
from crm.settings.read_api_groups import Identity, Quotas, Serving

# the groups, as Settings' attributes (crm.settings), in the README table's order
GROUPS: dict[str, type[Concern]] = {
    "platform": Platform, "extraction": Extraction, "sandbox": Sandbox, "orchestration": Orchestration,
    "warehouse": Warehouse, "model": Model, "serving": Serving, "identity": Identity, "quotas": Quotas,
}  # fmt: skip


@dataclass(frozen=True)
class Variable:
    """One ``CRM_*`` environment variable: its name, its default (None when it is computed or absent;
    then ``shown`` says what it is), what it sets, in one line, and the area it belongs to."""

    name: str
    default: object
    what: str
    area: str
    shown: str | None = None  # the default as the README shows it, when ``default`` cannot say it
    secret: bool = False

    @property
    def default_shown(self) -> str:
        if self.shown is not None:
            return self.shown
        if self.default in (None, "", ()):
            return "none"
        if isinstance(self.default, bool) or not isinstance(self.default, int | float):
            return f"`{self.default}`"
        return f"{self.default:,}" if isinstance(self.default, int) else f"{self.default:g}"


# read by dbt alone (its profile, the business-date macro): declared here so the table is the one
# list an operator reads
DBT_ONLY = (
    Variable("CRM_BUSINESS_DATE", None, "the business date a hand-run `dbt build` is for (read by dbt; "
             "`--vars '{business_date: ...}'` also works, at the cost of a full parse)", "orchestration",
             shown="set by the DAG (`{{ ds }}`)"),
)  # fmt: skip


def _is_secret(annotation: object) -> bool:
    return SecretStr in getattr(annotation, "__args__", ()) or annotation is SecretStr


def _variables() -> dict[str, Variable]:
    declared: dict[str, Variable] = {}
    for group in GROUPS.values():
        for field in group.model_fields.values():
            extra = field.json_schema_extra or {}
            default = None if field.default is PydanticUndefined else field.default
            variable = Variable(field.validation_alias, default, field.description, group.area,
                                shown=extra.get("shown"), secret=_is_secret(field.annotation))  # fmt: skip
            declared[variable.name] = variable
        declared.update({v.name: v for v in DBT_ONLY if v.area == group.area})
    return declared


VARIABLES: dict[str, Variable] = _variables()
SECRETS = frozenset(name for name, variable in VARIABLES.items() if variable.secret)


def config_table() -> str:
    """The README's configuration table, generated from :data:`VARIABLES` (``crm config-table``)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| variable | default | what it sets |", "| --- | --- | --- |"]
    area = None
    for variable in VARIABLES.values():
        if variable.area != area:
            area = variable.area
            lines.append(f"| **{cell(area)}** | | |")
        lines.append(f"| `{variable.name}` | {cell(variable.default_shown)} | {cell(variable.what)} |")
    return "\n".join(lines) + "\n"


CONFIG_TABLE_START, CONFIG_TABLE_END = "<!-- config-table:start -->\n", "<!-- config-table:end -->\n"


def config_table_section(readme: str) -> str:
    """What stands between the README's config-table markers (what :func:`config_table` must give)."""
    start, end = readme.find(CONFIG_TABLE_START), readme.find(CONFIG_TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {CONFIG_TABLE_START.strip()} ... {CONFIG_TABLE_END.strip()} markers")
    return readme[start + len(CONFIG_TABLE_START) : end]


def with_config_table(readme: str) -> str:
    """The README with the generated configuration table between its markers."""
    section = config_table_section(readme)
    start = readme.find(CONFIG_TABLE_START) + len(CONFIG_TABLE_START)
    return readme[:start] + config_table() + readme[start + len(section) :]
