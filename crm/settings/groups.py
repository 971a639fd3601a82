"""The platform's settings, one pydantic-settings model per concern.

Each field is one ``CRM_*`` variable (its ``validation_alias``), with its default and, as its
description, what it sets: the README's configuration table is generated from these declarations
(``crm config-table --write``), in the order of :data:`crm.settings.table.GROUPS` and of each
model's fields (the read API's are in :mod:`crm.settings.read_api_groups`). A value is read from
the environment, else from a file of the variable's name in the secrets directory (a mounted
Kubernetes Secret, ``CRM_SECRETS_DIR``), else the default. A malformed value stops the
settings with an error naming the variable and the value (a secret's value is never shown).

What depends on the data directory or on ``CRM_ENVIRONMENT`` (paths, production's refusals, the
external systems' Airflow Connections) is resolved by :class:`crm.settings.Settings` on top.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def var(name: str, default: Any, what: str, *, shown: str | None = None, **constraints: Any) -> Any:
    """A field read from the variable ``name``; ``shown`` is the default as the README shows it when
    the value cannot say it (computed from the data directory or the environment)."""
    extra = {"shown": shown} if shown is not None else None
    return Field(default, validation_alias=name, description=what, json_schema_extra=extra,
                 **constraints)  # fmt: skip


class Concern(BaseSettings):
    """One concern's settings: its ``area`` is the heading its variables have in the README."""

    # read by alias only (the CRM_* name), never by the bare field name
    model_config = SettingsConfigDict(
        frozen=True, case_sensitive=True, env_ignore_empty=True, extra="ignore", validate_default=True
    )
    area: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, values: Any) -> Any:
        """An empty value is no value, wherever it comes from: ``env_ignore_empty`` covers the
        environment, this the secrets directory (a Secret's empty key is not a configured secret,
        and production must still refuse what it lacks)."""
        if isinstance(values, dict):
            return {k: v for k, v in values.items() if not (isinstance(v, str) and not v.strip())}
        return values

    @classmethod
    def validated(cls, current: Concern, changes: dict[str, Any]) -> Concern:
        """``current`` with ``changes`` (by field name), validated as a value from the environment is;
        what was set stays set (production tells a default from a configured value)."""
        data = {field.validation_alias: getattr(current, name) for name, field in cls.model_fields.items()}
        data.update({cls.model_fields[name].validation_alias: value for name, value in changes.items()})
        changed = cls.model_validate(data)
        # a change to an empty value is no value: the field is back to its default, and unset
        kept = (current.model_fields_set - set(changes)) | (changed.model_fields_set & set(changes))
        object.__setattr__(changed, "__pydantic_fields_set__", kept)
        return changed


def _weekday(value: object) -> object:
    if isinstance(value, str):
        names = [d.lower() for d in WEEKDAYS]
        if value.strip().lower() not in names:
            raise ValueError(f"must be a day of the week ({', '.join(WEEKDAYS)})")
        return names.index(value.strip().lower())
    return value


def _authentication(value: object) -> object:
    spelled = {"sql": "sql", "serviceprincipal": "ServicePrincipal"}  # as dbt-sqlserver spells them
    return spelled.get(value.strip().lower(), value) if isinstance(value, str) else value


def _comma_separated(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Platform(Concern):
    area: ClassVar[str] = "the platform"
    home: str | None = var(
        "CRM_HOME",
        None,
        'the data directory: every local file the platform writes (see "Where things live")',
        shown="`.crm/` in the checkout",
    )
    environment: Literal["local", "production"] = var(
        "CRM_ENVIRONMENT",
        "local",
        "`production` (the image's) forbids every embedded stand-in: the sandbox bank, "
        "the embedded Redis, a local MLflow store, a development identity key, a model trained on the spot; what is "
        "not configured stops the work, named",
    )
    secrets_dir: str | None = var(
        "CRM_SECRETS_DIR",
        None,
        "a directory of mounted secrets (a Kubernetes Secret as a volume): a file named as a "
        "variable gives its value when the environment does not",
        shown="`/run/secrets/crm` when it exists",
    )
    npm_registry: str = var(
        "CRM_NPM_REGISTRY",
        "https://registry.npmjs.org",
        "where `make docs` fetches, once, the scripts and styles "
        "Great Expectations' Data Docs load (pinned, checked by sha512): the npm registry or the bank's mirror",
    )


class Extraction(Concern):
    area: ClassVar[str] = "the integration API and the extraction"
    core_api_url: str | None = var(
        "CRM_CORE_API_URL",
        None,
        "the bank's integration API (or the Airflow Connection `crm_core_banking`: host, "
        "login = client id, password = client secret)",
        shown="the embedded sandbox bank",
    )
    core_client_id: str | None = var("CRM_CORE_CLIENT_ID", None, "the OAuth2 client id for the integration API")
    core_client_secret: SecretStr | None = var(
        "CRM_CORE_CLIENT_SECRET", None, "the OAuth2 client secret for the integration API (a secret)"
    )
    page_size: int = var("CRM_PAGE_SIZE", 2000, "records per page asked of the integration API", ge=1)
    api_max_retries: int = var("CRM_API_MAX_RETRIES", 6, "retries of a failing call to the integration API", ge=0)
    api_timeout_s: float = var(
        "CRM_API_TIMEOUT_S", 30.0, "seconds before a call to the integration API times out (and is retried)", gt=0
    )
    api_max_retry_after_s: float = var(
        "CRM_API_MAX_RETRY_AFTER_S", 60.0, "the longest wait a `Retry-After` from the integration API may impose", ge=0
    )
    late_arrival_days: int = var(
        "CRM_LATE_ARRIVAL_DAYS",
        3,
        "days before the business date the daily delta re-reads whole (late bookings and "
        "responses); earlier days come from the warehouse, extracted once; a contact is learnt "
        "from once its day is read for the last time (raising it reads the whole window again once)",
        ge=0,
    )
    transaction_lookback_days: int = var(
        "CRM_TX_LOOKBACK_DAYS",
        180,
        "days of transactions the features need in `raw` (a history load fetches what is missing)",
        ge=1,
    )
    response_lookback_days: int = var(
        "CRM_RESPONSE_LOOKBACK_DAYS", 365, "days of campaign responses the features need in `raw`", ge=1
    )
    slice_records: int = var(
        "CRM_EXTRACT_SLICE_RECORDS",
        5_000_000,
        "a windowed extraction (a history load, a big bank's day) is cut into "
        "slices of whole days of about this many records by the API's count, one mapped `extract` and `gate_landing` "
        "task and one landed file each",
        ge=1000,
    )
    memory_mb: int = var(
        "CRM_EXTRACT_MEMORY_MB",
        256,
        "memory the extraction's dedup (DuckDB) works under; past it, it spills to disk",
        ge=16,
    )
    max_quarantine_share: float = var(
        "CRM_MAX_QUARANTINE_SHARE", 0.01, "share of contract-breaking records that fails a run", ge=0, le=1
    )
    max_volume_change: float = var(
        "CRM_MAX_VOLUME_CHANGE",
        0.5,
        "landing gate: an entity's rows may differ from the previous business date's by this share",
        ge=0,
    )
    raw_retention_days: int = var(
        "CRM_RAW_RETENTION_DAYS",
        35,
        "clear personal data (`raw.customers`, the customers' landing, the quarantine) "
        "of business dates older than this many days is deleted by `crm_retention`",
        ge=1,
    )


class Sandbox(Concern):
    area: ClassVar[str] = "the sandbox bank (local only)"
    customers: int = var("CRM_SANDBOX_CUSTOMERS", 5000, "customers of the embedded sandbox bank "
                         "(`make demo CUSTOMERS=`)", ge=1)  # fmt: skip
    seed: int = var("CRM_SANDBOX_SEED", 42, "seed of the embedded sandbox bank")
    faults: str = var("CRM_SANDBOX_FAULTS", "", "faults the embedded sandbox injects: `all`, or "
                      "`server_error=0.05,bad_record=0.01,...`")  # fmt: skip


class Orchestration(Concern):
    area: ClassVar[str] = "orchestration"
    task_retries: int = var("CRM_TASK_RETRIES", 2, "retries of each task of the DAGs (`make demo` and the tests use 0)",
                            ge=0)  # fmt: skip
    task_retry_delay_s: int = var(
        "CRM_TASK_RETRY_DELAY_S",
        120,
        "seconds before a failed task of `crm_daily` is retried (a worker lost, Redis "
        "failing over, the bank's API down for a moment)",
        ge=0,
    )
    task_timeout_minutes: int = var(
        "CRM_TASK_TIMEOUT_MINUTES", 120, "each task's `execution_timeout` in the DAGs: nothing hangs a run", ge=1
    )
    dagrun_timeout_hours: float = var(
        "CRM_DAGRUN_TIMEOUT_HOURS",
        12.0,
        "each DAG's `dagrun_timeout`: a run still going after this long fails (and "
        "its failure is e-mailed); a backfill's runs share the warehouse pool, so raise it for long ones",
        gt=0,
    )
    alert_emails: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_separated)] = var(
        "CRM_ALERT_EMAILS",
        (),
        "who is e-mailed when a run of any DAG fails (comma-separated addresses), through the "
        "Airflow Connection `smtp_default` (host, port, login, password, extra `from_email`); required in production",
        shown="nobody: the Airflow UI only",
    )
    training_weekday: Annotated[int, BeforeValidator(_weekday)] = var(
        "CRM_TRAINING_WEEKDAY",
        "Saturday",
        "`crm_model_training` trains after the `crm_daily` of a business date "
        "falling on this day of the week (its asset `crm_assignment`); on the others its run stops at `as_of`",
        shown="`Saturday`",
    )
    snapshot_deadline_lima: dt.time = var(
        "CRM_SNAPSHOT_DEADLINE_LIMA",
        "07:00",
        "Lima time (HH:MM), on the day after a business date, by which "
        "`crm_daily` must have published that date's snapshot: if no snapshot of that date (or a later one) is live "
        "then, `CRM_ALERT_EMAILS` are e-mailed (Airflow's deadline alert; not for backfills)",
        shown="`07:00`",
    )

    @field_validator("alert_emails")
    @classmethod
    def _addresses(cls, addresses: tuple[str, ...]) -> tuple[str, ...]:
        for address in addresses:
            if "@" not in address:
                raise ValueError(f"{address!r} is not an e-mail address")
        return addresses


class Warehouse(Concern):
    area: ClassVar[str] = "the warehouse"
    target: Literal["local", "postgres", "azure"] | None = var(
        "CRM_DBT_TARGET",
        None,
        "the warehouse every stage reads and writes: `local` (DuckDB, embedded), `postgres` "
        "(PostgreSQL) or `azure` (Azure SQL); in production `azure` unless set, and never `local`",
        shown="`local`; `azure` in production",
    )
    server_pool_slots: int = var(
        "CRM_WAREHOUSE_POOL_SLOTS",
        8,
        "tasks of the DAGs that may use a server warehouse (`postgres`, `azure`) at "
        "once: the Airflow pool `crm_warehouse`; on DuckDB it has one slot (one writing process)",
        ge=1,
    )
    duckdb_file: str | None = var("CRM_DUCKDB_PATH", None, "the local warehouse (DuckDB)",
                                  shown="`.crm/warehouse.duckdb`")  # fmt: skip
    duckdb_memory_mb: int = var(
        "CRM_DUCKDB_MEMORY_MB",
        2048,
        "memory the warehouse's DuckDB (dbt, the load, scoring's reads) works under; "
        "past it, it spills beside the file",
        ge=64,
    )
    postgres_host: str | None = var(
        "CRM_POSTGRES_HOST",
        None,
        "the PostgreSQL server for `CRM_DBT_TARGET=postgres` (or the Airflow Connection `crm_warehouse`)",
        shown="an embedded server in `.crm/postgres` (not in production)",
    )
    postgres_port: int | None = var("CRM_POSTGRES_PORT", None, "its port",
                                    shown="5432; the embedded server's: one per data directory", ge=1)  # fmt: skip
    postgres_user: str = var("CRM_POSTGRES_USER", "crm", "the user the stages and dbt connect as")
    postgres_password: SecretStr | None = var("CRM_POSTGRES_PASSWORD", None, "its password (a secret)",
                                              shown="the embedded server's, in `.crm/postgres.pgpass`")  # fmt: skip
    postgres_database: str = var("CRM_POSTGRES_DATABASE", "crm", "the database")
    postgres_bin: str | None = var("CRM_POSTGRES_BIN", None, "where the embedded server's programs are (`initdb`, "
                                   "`postgres`)", shown="Debian's `/usr/lib/postgresql/<newest>/bin`")  # fmt: skip
    azure_sql_server: str | None = var(
        "CRM_AZURE_SQL_SERVER", None, "the Azure SQL server (`<name>.database.windows.net`) for `CRM_DBT_TARGET=azure`"
    )
    azure_sql_database: str = var("CRM_AZURE_SQL_DATABASE", "crm", "the Azure SQL database")
    azure_sql_auth: Annotated[Literal["sql", "ServicePrincipal"], BeforeValidator(_authentication)] = var(
        "CRM_AZURE_SQL_AUTH", "sql", "`sql` (user and password) or `ServicePrincipal` (client id and secret)"
    )
    azure_sql_user: str | None = var("CRM_AZURE_SQL_USER", None, "the SQL user (`sql` authentication)")
    azure_sql_password: SecretStr | None = var("CRM_AZURE_SQL_PASSWORD", None, "the SQL user's password (a secret)")
    azure_client_id: str | None = var(
        "CRM_AZURE_CLIENT_ID", None, "the service principal's client id (`ServicePrincipal` authentication)"
    )
    azure_client_secret: SecretStr | None = var(
        "CRM_AZURE_CLIENT_SECRET", None, "the service principal's secret (a secret)"
    )
    azure_tenant_id: str | None = var("CRM_AZURE_TENANT_ID", None, "the service principal's tenant (read by dbt's "
                                      "profile)")  # fmt: skip
    analyst_role: str = var(
        "CRM_ANALYST_ROLE",
        "crm_analyst",
        "the analysts' role on a server warehouse: dbt grants it reads of `marts`, "
        "`snapshots` and `campaigns` and nothing else; `crm sql` connects as it",
    )
    analyst_password: SecretStr | None = var(
        "CRM_ANALYST_PASSWORD",
        None,
        "the analysts' role's password for `crm sql` on a server (a secret, on the analyst's machine)",
        shown="the embedded PostgreSQL's, in `.crm/postgres.pgpass`",
    )


class Model(Concern):
    area: ClassVar[str] = "the model and the assignment"
    tracking_uri: str | None = var(
        "CRM_MLFLOW_TRACKING_URI",
        None,
        "the MLflow tracking server and model registry (or an Azure ML workspace's MLflow URI); required in production",
        shown="SQLite in `.crm/mlflow/`",
    )
    artifact_root: str | None = var(
        "CRM_MLFLOW_ARTIFACT_ROOT",
        None,
        "where the experiment's artifacts go (models, plots), set when the experiment is first created",
        shown="`.crm/mlflow/artifacts`",
    )
    model_name: str = var("CRM_MODEL_NAME", "crm-campaign-propensity", "the registered model whose `champion` scores")
    max_offers_per_customer: int = var("CRM_MAX_OFFERS", 3, "offers per customer", ge=1)
    exploration_share: float = var(
        "CRM_EXPLORATION_SHARE", 0.05,
        "customers, drawn each day by a hash of id and date, who get one of their eligible offers at "
        "random (the exploration arm; its share of every capacity too)", ge=0, le=0.5,
    )  # fmt: skip
    hand_off_executions: bool | None = var(
        "CRM_HAND_OFF_EXECUTIONS", None,
        "after a date's snapshot goes live, hand its served offers and its control to the bank's campaign "
        "execution through the integration API (`PUT /v1/campaign-executions/{date}`); false where the bank's "
        "marketing pulls the segments from the read API instead",
        shown="on with the embedded sandbox bank, off with a configured integration API",
    )  # fmt: skip
    control_share: float = var(
        "CRM_CONTROL_SHARE", 0.05,
        "customers held out each day as the control arm: their offer is logged, never served or contacted",
        ge=0, lt=0.5,
    )  # fmt: skip
