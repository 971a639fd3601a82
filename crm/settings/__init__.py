"""One place that resolves every path and setting of the platform.

The settings are grouped by concern (:mod:`crm.settings.groups`: the platform, extraction, the
sandbox, orchestration, the warehouse, the model, serving, identity, quotas), each a
pydantic-settings model read from ``CRM_*`` environment variables or from files of the same names
in the secrets directory (``CRM_SECRETS_DIR``, a mounted Kubernetes Secret). :class:`Settings`
holds them as attributes (``settings.extraction.page_size``) and resolves on top what depends on the
data directory or on ``CRM_ENVIRONMENT``: the paths, and the external systems, whose secrets inside a
DAG's tasks come from Airflow Connections (``crm_core_banking``, ``crm_redis``, ``crm_warehouse``)
when no ``CRM_*`` variable names them. When neither does, the embedded local default is used (the
sandbox bank, the Redis server in the data directory), started on demand by :mod:`crm.services`;
production refuses it, naming what to set.

The entry points build settings once (:func:`get_settings`) and pass them down; no other module
reads ``os.environ`` for configuration. The README's configuration table is generated from the
groups' declarations (``crm config-table --write``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from crm.settings import systems
from crm.settings.groups import (
    WEEKDAYS,
    Concern,
    Extraction,
    Model,
    Orchestration,
    Platform,
    Sandbox,
    Warehouse,
)
from crm.settings.read_api_groups import Identity, Quotas, Serving
from crm.settings.systems import (
    Analyst,
    AzureSql,
    CoreApi,
    Postgres,
    SettingsError,
    TokenKeys,
    embedded_postgres_port,
)
from crm.settings.table import (
    GROUPS,
    SECRETS,
    VARIABLES,
    Variable,
    config_table,
    config_table_section,
    with_config_table,
)

__all__ = [
    "DBT_PROJECT_DIR", "REPO_ROOT", "VARIABLES", "WAREHOUSE_POOL", "WEEKDAYS", "Analyst", "AzureSql", "CoreApi",
    "Postgres", "Settings", "SettingsError", "TokenKeys", "Variable", "config_table", "config_table_section",
    "embedded_postgres_port", "environment", "get_settings", "private_files", "today_in_lima", "with_config_table",
    "yesterday_in_lima",
]  # fmt: skip

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
DEFAULT_SECRETS_DIR = Path("/run/secrets/crm")

C = TypeVar("C", bound=Concern)

# the Airflow pool of every task that reads or writes the warehouse (slots: Settings.warehouse_pool_slots)
WAREHOUSE_POOL = "crm_warehouse"


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` set in this process's environment for the block, then put back as they were."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _named(error: ValidationError) -> SettingsError:
    """A validation error as one line a person can act on: each variable at fault, its value (never
    a secret's), and what is wrong with it."""
    faults = []
    for fault in error.errors(include_url=False):
        name = ".".join(str(part) for part in fault["loc"]) or error.title
        shown = "(a secret, not shown)" if name in SECRETS else repr(fault.get("input"))
        faults.append(f"{name}={shown}: {fault['msg'].removeprefix('Value error, ')}")
    return SettingsError("; ".join(faults))


def secrets_dir() -> Path | None:
    """Where mounted secrets are read from: ``CRM_SECRETS_DIR`` (which must then exist), else
    ``/run/secrets/crm`` when it exists, else none."""
    configured = os.environ.get("CRM_SECRETS_DIR")
    if configured:
        if not Path(configured).is_dir():
            raise SettingsError(f"CRM_SECRETS_DIR={configured!r}: not a directory (the mounted secrets)")
        return Path(configured)
    return DEFAULT_SECRETS_DIR if DEFAULT_SECRETS_DIR.is_dir() else None


def load(group: type[C]) -> C:
    """One concern's settings as the environment and the mounted secrets say now."""
    try:
        return group(_secrets_dir=secrets_dir())
    except ValidationError as error:
        raise _named(error) from None


# which group holds each setting (names are unique across groups: Settings.replace routes by them)
FIELD_GROUP: dict[str, str] = {}
for _name, _group in GROUPS.items():
    for _field in _group.model_fields:
        if _field in FIELD_GROUP:
            raise TypeError(f"the setting {_field} is in two groups: {FIELD_GROUP[_field]} and {_name}")
        FIELD_GROUP[_field] = _name


class Settings(BaseModel):
    """Every setting, grouped (``settings.serving.redis_prefix``), with the data directory, the
    environment and what they decide resolved on top. ``Settings()`` reads the environment now;
    ``Settings(home=...)`` puts the data directory elsewhere; :meth:`replace` changes some."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path
    environment: Literal["local", "production"]
    platform: Platform
    extraction: Extraction
    sandbox: Sandbox
    orchestration: Orchestration
    warehouse: Warehouse
    model: Model
    serving: Serving
    identity: Identity
    quotas: Quotas

    def __init__(self, **values: Any) -> None:
        for name, group in GROUPS.items():
            if name not in values:
                values[name] = load(group)
        values.setdefault("home", Path(values["platform"].home or REPO_ROOT / ".crm"))
        values.setdefault("environment", values["platform"].environment)
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise _named(error) from None
        self._check_target()

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes``: each names a field of the settings (``home``) or of one group
        (``customers``, ``redis_deadline_s``), validated as the environment's values are; nothing
        resolved before is carried over."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        by_group: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            if name in values and name not in GROUPS:
                values[name] = value
            elif name in FIELD_GROUP:
                by_group.setdefault(FIELD_GROUP[name], {})[name] = value
            else:
                raise TypeError(f"{name} is not a setting")
        for group, update in by_group.items():
            try:
                values[group] = GROUPS[group].validated(getattr(self, group), update)
            except ValidationError as error:
                raise _named(error) from None
        values["home"] = Path(values["home"])
        if values["environment"] not in ("local", "production"):
            raise SettingsError(f"environment={values['environment']!r}: must be 'local' or 'production'")
        changed = type(self).model_construct(**values)
        changed._check_target()
        return changed

    # ---- what the environment decides ------------------------------------------------------
    @property
    def production(self) -> bool:
        return self.environment == "production"

    def no_fallback(self, what: str, configure: str) -> None:
        """Production never falls back to an embedded stand-in: what is not configured stops the work."""
        if self.production:
            raise SettingsError(
                f"CRM_ENVIRONMENT=production and no {what} is configured: set {configure}. "
                "Production never falls back to an embedded stand-in."
            )

    def _check_target(self) -> None:
        if self.production and self.warehouse.target == "local":
            raise SettingsError(
                "CRM_ENVIRONMENT=production and CRM_DBT_TARGET=local: the embedded DuckDB warehouse is for "
                "development; set CRM_DBT_TARGET=azure (or postgres) and the warehouse's Connection crm_warehouse"
            )

    @property
    def dbt_target(self) -> str:
        """The warehouse every stage uses: production's is Azure SQL unless another server is named,
        and never the embedded DuckDB file (one writing process, on one pod's disk)."""
        return self.warehouse.target or ("azure" if self.production else "local")

    @property
    def warehouse_pool_slots(self) -> int:
        """Slots of the Airflow pool ``crm_warehouse`` every warehouse task runs in: one on DuckDB,
        which allows one writing process; ``CRM_WAREHOUSE_POOL_SLOTS`` on a server."""
        return 1 if self.dbt_target == "local" else self.warehouse.server_pool_slots

    @property
    def metrics_port(self) -> int | None:
        """The read API's Prometheus metrics on a port of their own (the cluster's scraper, never the
        public route): production's default 9100; locally none (on the API's port)."""
        port = self.serving.metrics_port
        return (port if port is not None else 9100 if self.production else 0) or None

    @cached_property
    def alert_emails(self) -> list[str]:
        """Who is e-mailed when a DAG run fails; production never runs a DAG that tells nobody."""
        if not self.orchestration.alert_emails:
            self.no_fallback("recipient of failure alerts", "CRM_ALERT_EMAILS (and the Connection smtp_default)")
        return list(self.orchestration.alert_emails)

    @cached_property
    def mlflow_tracking_uri(self) -> str:
        uri = self.model.tracking_uri
        if uri is None:
            self.no_fallback("model registry", "CRM_MLFLOW_TRACKING_URI (the MLflow server or Azure ML workspace)")
        return uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> str:
        return self.model.artifact_root or (self.home / "mlflow" / "artifacts").as_uri()

    # ---- the external systems (crm.settings.systems) ------------------------------------------
    @cached_property
    def redis_url(self) -> str | None:
        """The Redis URL to use, or None for the embedded server in the data directory."""
        return systems.redis_url(self)

    @cached_property
    def token_keys(self) -> TokenKeys:
        return systems.token_keys(self)

    @cached_property
    def azure_sql(self) -> AzureSql:
        return systems.azure_sql(self)

    @cached_property
    def analyst(self) -> Analyst:
        return systems.analyst(self)

    @cached_property
    def postgres(self) -> Postgres:
        return systems.postgres(self)

    @cached_property
    def core_api(self) -> CoreApi:
        return systems.core_api(self)

    # ---- paths in the data directory -------------------------------------------------------
    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def duckdb_path(self) -> Path:
        return Path(self.warehouse.duckdb_file or self.home / "warehouse.duckdb")

    @property
    def postgres_dir(self) -> Path:
        """The embedded PostgreSQL server's data directory."""
        return self.home / "postgres"

    @property
    def postgres_bin(self) -> Path | None:
        """Where the embedded PostgreSQL server's programs are, when set (``CRM_POSTGRES_BIN``)."""
        return Path(self.warehouse.postgres_bin) if self.warehouse.postgres_bin else None

    @property
    def analysts_dir(self) -> Path:
        """The analysts' copy of the DuckDB warehouse (``marts``, ``snapshots``, ``campaigns`` as
        Parquet files and the manifest that lists a whole date's), which ``crm sql`` reads."""
        return self.home / "analysts"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def run_dir(self) -> Path:
        """Pid and state files of the embedded services."""
        return self.home / "run"

    @property
    def api_keys_path(self) -> Path:
        return Path(self.identity.api_keys_file or self.home / "api_keys.json")

    @property
    def demo_api_keys_path(self) -> Path:
        return self.home / "demo_api_keys.json"

    @property
    def dev_signing_key_path(self) -> Path:
        """The development identity provider's private key (``crm token``; never in production)."""
        return self.home / "identity" / "dev_signing_key.pem"

    @property
    def audit_dir(self) -> Path:
        """The read API's audit trail: one hash-chained file per API process and day."""
        return Path(self.identity.audit_directory or self.home / "audit")

    @cached_property
    def audit_key_path(self) -> Path:
        """The secret the audit trail's MACs are keyed with (one key a line: the first signs, the
        others are retired keys kept to verify older files). Mounted by the deployment, never in
        the audit directory; locally made on first use beside the development signing key."""
        configured = self.identity.audit_key_file
        if configured is None:
            self.no_fallback("audit trail key", "CRM_AUDIT_KEY_FILE (a secret the deployment mounts)")
        path = Path(configured) if configured else self.home / "identity" / "audit_key"
        audit_dir = self.audit_dir.resolve()
        if path.resolve().is_relative_to(audit_dir):
            raise SettingsError(
                f"CRM_AUDIT_KEY_FILE ({path}) is inside the audit directory {audit_dir}: whoever can rewrite "
                "the trail could then recompute its MACs; mount the key elsewhere"
            )
        return path

    @property
    def dbt_project_dir(self) -> Path:
        return DBT_PROJECT_DIR

    @property
    def dags_dir(self) -> Path:
        return REPO_ROOT / "dags"

    def ensure_dirs(self) -> None:
        for path in (self.home, self.landing_dir, self.quarantine_dir, self.run_dir):
            path.mkdir(parents=True, exist_ok=True)


def private_files() -> None:
    """What this process and its children create (the warehouse, landing and quarantine files, the
    audit trail, the services' data) is its user's alone: files 0600, directories 0700."""
    os.umask(0o077)


def today_in_lima() -> dt.date:
    from zoneinfo import ZoneInfo

    return dt.datetime.now(ZoneInfo("America/Lima")).date()


def yesterday_in_lima() -> dt.date:
    """The last complete business day of a Peruvian bank (the default business date)."""
    return today_in_lima() - dt.timedelta(days=1)


def get_settings() -> Settings:
    """Settings as the environment and the mounted secrets say now (a few milliseconds: the entry
    points build them once and pass them down)."""
    return Settings()
