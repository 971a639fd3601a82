"""One place that resolves every path and setting of the platform.

Outside Airflow, settings come from ``CRM_*`` environment variables; inside a DAG's tasks the
secrets of external systems come from Airflow Connections (``crm_core_banking``, ``crm_redis``),
which Airflow also reads from ``AIRFLOW_CONN_*`` variables. A ``CRM_*`` variable, when set, wins.
When neither names an external system, the embedded local default is used (the sandbox bank, the
Redis server in the data directory), started on demand by :mod:`crm.services`.

No other module reads ``os.environ`` for configuration. Every ``CRM_*`` variable is declared once
in :data:`VARIABLES` (default as shown, what it sets); the helpers refuse a name not declared there,
and the README's configuration table is generated from it (``crm config-table --write``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"


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


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class UndeclaredVariable(LookupError):
    """Code read a ``CRM_*`` variable that :data:`VARIABLES` does not declare, or with another
    default than the declared one: a programming error (declare it, and regenerate the README)."""


@dataclass(frozen=True)
class Variable:
    """One ``CRM_*`` environment variable: its name, the default the code passes (None when it is
    computed or absent; then ``shown`` says what it is), what it sets, in one line."""

    name: str
    default: str | int | float | None
    what: str
    shown: str | None = None  # the default as the README shows it, when ``default`` cannot say it
    area: str = ""

    @property
    def default_shown(self) -> str:
        if self.shown is not None:
            return self.shown
        if self.default is None or self.default == "":
            return "none"
        if isinstance(self.default, bool) or not isinstance(self.default, int | float):
            return f"`{self.default}`"
        return f"{self.default:,}" if isinstance(self.default, int) else f"{self.default:g}"


def _declare(areas: dict[str, tuple[Variable, ...]]) -> dict[str, Variable]:
    declared: dict[str, Variable] = {}
    for area, variables in areas.items():
        for variable in variables:
            if variable.name in declared:
                raise UndeclaredVariable(f"{variable.name} is declared twice")
            declared[variable.name] = replace(variable, area=area)
    return declared


V = Variable
# Every CRM_* variable, once, by area, in the order the README's table shows them. A variable read
# by dbt alone (profiles.yml, the business-date macro) is declared here too: the table is the one
# list an operator reads.
VARIABLES: dict[str, Variable] = _declare({
    "the platform": (
        V("CRM_HOME", None, "the data directory: every local file the platform writes (see \"Where things live\")",
          shown="`.crm/` in the checkout"),
        V("CRM_ENVIRONMENT", "local", "`production` (the image's) forbids every embedded stand-in: the sandbox bank, "
          "the embedded Redis, a local MLflow store, a development identity key, a model trained on the spot; "
          "what is not configured stops the work, named"),
    ),
    "the integration API and the extraction": (
        V("CRM_CORE_API_URL", None, "the bank's integration API (or the Airflow Connection `crm_core_banking`: host, "
          "login = client id, password = client secret)", shown="the embedded sandbox bank"),
        V("CRM_CORE_CLIENT_ID", None, "the OAuth2 client id for the integration API"),
        V("CRM_CORE_CLIENT_SECRET", None, "the OAuth2 client secret for the integration API (a secret)"),
        V("CRM_PAGE_SIZE", 2000, "records per page asked of the integration API"),
        V("CRM_API_MAX_RETRIES", 6, "retries of a failing call to the integration API"),
        V("CRM_API_TIMEOUT_S", 30.0, "seconds before a call to the integration API times out (and is retried)"),
        V("CRM_API_MAX_RETRY_AFTER_S", 60.0, "the longest wait a `Retry-After` from the integration API may impose"),
        V("CRM_LATE_ARRIVAL_DAYS", 3, "days before the business date the daily delta re-reads whole (late bookings "
          "and responses); earlier days come from the warehouse, extracted once"),
        V("CRM_TX_LOOKBACK_DAYS", 180, "days of transactions the features need in `raw` (a history load fetches "
          "what is missing)"),
        V("CRM_RESPONSE_LOOKBACK_DAYS", 365, "days of campaign responses the features need in `raw`"),
        V("CRM_EXTRACT_SLICE_RECORDS", 5_000_000, "a windowed extraction (a history load, a big bank's day) is cut "
          "into slices of whole days of about this many records by the API's count, one mapped `extract` and "
          "`gate_landing` task and one landed file each"),
        V("CRM_EXTRACT_MEMORY_MB", 256, "memory the extraction's dedup (DuckDB) works under; past it, it spills to disk"),
        V("CRM_MAX_QUARANTINE_SHARE", 0.01, "share of contract-breaking records that fails a run"),
        V("CRM_MAX_VOLUME_CHANGE", 0.5, "landing gate: an entity's rows may differ from the previous business date's "
          "by this share"),
    ),
    "the sandbox bank (local only)": (
        V("CRM_SANDBOX_CUSTOMERS", 5000, "customers of the embedded sandbox bank (`make demo CUSTOMERS=`)"),
        V("CRM_SANDBOX_SEED", 42, "seed of the embedded sandbox bank"),
        V("CRM_SANDBOX_FAULTS", "", "faults the embedded sandbox injects: `all`, or `server_error=0.05,bad_record=0.01,...`"),
    ),
    "orchestration": (
        V("CRM_TASK_RETRIES", 2, "retries of each task of the DAGs (`make demo` and the tests use 0)"),
        V("CRM_TASK_RETRY_DELAY_S", 120, "seconds before a failed task of `crm_daily` is retried (a worker lost, "
          "Redis failing over, the bank's API down for a moment)"),
        V("CRM_TASK_TIMEOUT_MINUTES", 120, "each task's `execution_timeout` in the DAGs: nothing hangs a run"),
        V("CRM_DAGRUN_TIMEOUT_HOURS", 12.0, "each DAG's `dagrun_timeout`: a run still going after this long fails "
          "(and its failure is e-mailed); a backfill's runs share the warehouse pool, so raise it for long ones"),
        V("CRM_ALERT_EMAILS", None, "who is e-mailed when a run of any DAG fails (comma-separated addresses), through "
          "the Airflow Connection `smtp_default` (host, port, login, password, extra `from_email`); required in "
          "production", shown="nobody: the Airflow UI only"),
        V("CRM_TRAINING_WEEKDAY", "Saturday", "`crm_model_training` trains after the `crm_daily` of a business date "
          "falling on this day of the week (its asset `crm_assignment`); on the others its run stops at `as_of`"),
        V("CRM_SNAPSHOT_DEADLINE_LIMA", "07:00", "Lima time (HH:MM), on the day after a business date, by which "
          "`crm_daily` must have published that date's snapshot: if no snapshot of that date (or a later one) is "
          "live then, `CRM_ALERT_EMAILS` are e-mailed (Airflow's deadline alert; not for backfills)"),
        V("CRM_BUSINESS_DATE", None, "the business date a hand-run `dbt build` is for (read by dbt; "
          "`--vars '{business_date: ...}'` also works, at the cost of a full parse)", shown="set by the DAG (`{{ ds }}`)"),
    ),
    "the warehouse": (
        V("CRM_DBT_TARGET", None, "the warehouse every stage reads and writes: `local` (DuckDB, embedded), "
          "`postgres` (PostgreSQL) or `azure` (Azure SQL); in production `azure` unless set, and never `local`",
          shown="`local`; `azure` in production"),
        V("CRM_WAREHOUSE_POOL_SLOTS", 8, "tasks of the DAGs that may use a server warehouse (`postgres`, `azure`) at "
          "once: the Airflow pool `crm_warehouse`; on DuckDB it has one slot (one writing process)"),
        V("CRM_DUCKDB_PATH", None, "the local warehouse (DuckDB)", shown="`.crm/warehouse.duckdb`"),
        V("CRM_DUCKDB_MEMORY_MB", 2048, "memory the warehouse's DuckDB (dbt, the load, scoring's reads) works under; "
          "past it, it spills beside the file"),
        V("CRM_POSTGRES_HOST", None, "the PostgreSQL server for `CRM_DBT_TARGET=postgres` (or the Airflow Connection "
          "`crm_warehouse`)", shown="an embedded server in `.crm/postgres` (not in production)"),
        V("CRM_POSTGRES_PORT", None, "its port", shown="5432; the embedded server's: one per data directory"),
        V("CRM_POSTGRES_USER", "crm", "the user the stages and dbt connect as"),
        V("CRM_POSTGRES_PASSWORD", None, "its password (a secret)", shown="the embedded server's, in `.crm/postgres.pgpass`"),
        V("CRM_POSTGRES_DATABASE", "crm", "the database"),
        V("CRM_POSTGRES_BIN", None, "where the embedded server's programs are (`initdb`, `postgres`)",
          shown="Debian's `/usr/lib/postgresql/<newest>/bin`"),
        V("CRM_AZURE_SQL_SERVER", None, "the Azure SQL server (`<name>.database.windows.net`) for `CRM_DBT_TARGET=azure`"),
        V("CRM_AZURE_SQL_DATABASE", "crm", "the Azure SQL database"),
        V("CRM_AZURE_SQL_AUTH", "sql", "`sql` (user and password) or `ServicePrincipal` (client id and secret)"),
        V("CRM_AZURE_SQL_USER", None, "the SQL user (`sql` authentication)"),
        V("CRM_AZURE_SQL_PASSWORD", None, "the SQL user's password (a secret)"),
        V("CRM_AZURE_CLIENT_ID", None, "the service principal's client id (`ServicePrincipal` authentication)"),
        V("CRM_AZURE_CLIENT_SECRET", None, "the service principal's secret (a secret)"),
        V("CRM_AZURE_TENANT_ID", None, "the service principal's tenant (read by dbt's profile)"),
        V("CRM_ANALYST_ROLE", "crm_analyst", "the analysts' role on a server warehouse: dbt grants it reads of "
          "`marts`, `snapshots` and `campaigns` and nothing else; `crm sql` connects as it"),
        V("CRM_ANALYST_PASSWORD", None, "the analysts' role's password for `crm sql` on a server (a secret, on the "
          "analyst's machine)", shown="the embedded PostgreSQL's, in `.crm/postgres.pgpass`"),
        V("CRM_NPM_REGISTRY", "https://registry.npmjs.org", "where `make docs` fetches, once, the scripts and styles "
          "Great Expectations' Data Docs load (pinned, checked by sha512): the npm registry or the bank's mirror"),
    ),
    "personal data": (
        V("CRM_RAW_RETENTION_DAYS", 35, "clear personal data (`raw.customers`, the customers' landing, the quarantine) "
          "of business dates older than this many days is deleted by `crm_retention`"),
    ),
    "the model and the assignment": (
        V("CRM_MLFLOW_TRACKING_URI", None, "the MLflow tracking server and model registry (or an Azure ML "
          "workspace's MLflow URI); required in production", shown="SQLite in `.crm/mlflow/`"),
        V("CRM_MLFLOW_ARTIFACT_ROOT", None, "where the experiment's artifacts go (models, plots), set when "
          "the experiment is first created", shown="`.crm/mlflow/artifacts`"),
        V("CRM_MODEL_NAME", "crm-campaign-propensity", "the registered model whose `champion` scores"),
        V("CRM_MAX_OFFERS", 3, "offers per customer"),
    ),
    "the cache": (
        V("CRM_REDIS_URL", None, "`redis://`, `rediss://` with a password (Azure Cache for Redis), any node of a "
          "Redis Cluster (or the Airflow Connection `crm_redis`); required in production",
          shown="the embedded server on `.crm/run/redis.sock`"),
        V("CRM_REDIS_PREFIX", "crm", "prefix of every key the platform writes in Redis"),
        V("CRM_SNAPSHOT_TTL_HOURS", 24.0, "how long a cache snapshot is fresh"),
        V("CRM_SNAPSHOT_GRACE_HOURS", 6.0, "how long a snapshot past its TTL keeps serving, flagged stale, when the "
          "next run is late"),
        V("CRM_SNAPSHOT_DRAIN_SECONDS", 900, "how long a replaced snapshot stays readable, so an export that started "
          "on it finishes from it"),
        V("CRM_MAX_AUDIENCE_SHRINK", 0.3, "publish guard: a snapshot serving a larger share fewer customers than the "
          "live one is refused"),
        V("CRM_REDIS_DEADLINE_S", 2.0, "the read API answers 503 when Redis has not answered a request's reads by then"),
    ),
    "the read API: identity": (
        V("CRM_JWT_JWKS_URL", None, "the bank's identity provider's keys (JWKS) that bearer tokens are verified with; "
          "this or `CRM_JWT_PUBLIC_KEY_FILE` is required in production", shown="the development key in `.crm/identity/`"),
        V("CRM_JWT_PUBLIC_KEY_FILE", None, "a PEM public key to verify bearer tokens with, instead of a JWKS URL"),
        V("CRM_JWT_ISSUER", "crm-dev", "the tokens' issuer (`iss`); required in production"),
        V("CRM_JWT_AUDIENCE", "crm-read-api", "the tokens' audience (`aud`)"),
        V("CRM_JWT_ROLE_CLAIM", "crm_role", "the token claim naming the caller's role: `customer`, `sales` or `marketing`"),
        V("CRM_API_KEYS_FILE", None, "the integration keys' store (hashes, names, roles, expiry); production never "
          "makes one: `crm serve` stops when it is missing", shown="`.crm/api_keys.json`"),
        V("CRM_API_KEY_RELOAD_S", 10.0, "a running API re-reads the key store (revocations, new keys) this often"),
        V("CRM_TRUSTED_PROXIES", "", "IPs or CIDRs (comma-separated) of the router in front of the read API: only their "
          "`X-Forwarded-For` / `X-Forwarded-Proto` are believed"),
        V("CRM_METRICS_PORT", None, "the port `/metrics` (Prometheus) is served on, and nothing else there",
          shown="9100 in production; locally none (`/metrics` on the API's port)"),
    ),
    "the read API: audit trail": (
        V("CRM_AUDIT_DIR", None, "the read API's audit trail: one chained file per API process and day",
          shown="`.crm/audit`"),
        V("CRM_AUDIT_KEY_FILE", None, "the audit trail's HMAC key, one a line (the first signs; rotation in decision "
          "0015); a mounted secret, never inside the audit directory; required in production",
          shown="`.crm/identity/audit_key` (made locally)"),
        V("CRM_AUDIT_SEAL_S", 5.0, "how often a busy API process seals its audit file"),
    ),
    "the read API: quotas (per person or integration)": (
        V("CRM_QUOTA_LOOKUPS_PER_MINUTE", 600, "customer look-ups a minute (sales, marketing, the mobile app)"),
        V("CRM_QUOTA_SEGMENT_ROWS_PER_DAY", 250_000, "segment rows a day, pages (API and console) and CSV exports "
          "together"),
        V("CRM_QUOTA_EXPORTS_PER_DAY", 50, "CSV exports of a segment a day"),
    ),
    "the read API: the mobile app's reads from the bank": (
        V("CRM_BANK_API_TIMEOUT_S", 3.0, "timeout of the read API's calls to the integration API (balances, "
          "transactions): a person is waiting"),
        V("CRM_BANK_API_RETRIES", 2, "retries of those calls"),
        V("CRM_BANK_BREAKER_FAILURES", 5, "failed calls in a row that open the circuit breaker"),
        V("CRM_BANK_BREAKER_RESET_S", 30.0, "seconds the open breaker answers 503 (with `Retry-After`) before it "
          "tries the bank again"),
    ),
})  # fmt: skip
del V


def _declared(name: str, default: object = None) -> Variable:
    variable = VARIABLES.get(name)
    if variable is None:
        raise UndeclaredVariable(f"{name} is not declared in crm.settings.VARIABLES: declare it (default, what it "
                                 "sets), then regenerate the README's table with `crm config-table --write`")  # fmt: skip
    if default is not None and variable.default is not None and default != variable.default:
        raise UndeclaredVariable(f"{name} is read with the default {default!r}, declared as {variable.default!r}")
    return variable


def _env(name: str, default: str | None = None) -> str | None:
    _declared(name, default)
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _int(name: str, default: int, minimum: int | None = None) -> int:
    _declared(name, default)
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(name: str, default: float) -> float:
    _declared(name, default)
    raw = _env(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _weekday(name: str, default: str) -> int:
    _declared(name, default)
    raw = _env(name, default)
    try:
        return [d.lower() for d in WEEKDAYS].index(raw.strip().lower())
    except ValueError:
        raise SettingsError(f"{name} must be a day of the week ({', '.join(WEEKDAYS)}), got {raw!r}") from None


def _time(name: str, default: str) -> dt.time:
    _declared(name, default)
    raw = _env(name, default)
    try:
        return dt.time.fromisoformat(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a time of day as HH:MM, got {raw!r}") from None


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


ENVIRONMENTS = ("local", "production")


def _airflow_connection(conn_id: str):
    """The Airflow Connection ``conn_id`` when running with Airflow and it exists, else None. Only
    "not defined" means None: any other failure to look it up raises, naming the connection."""
    if not (os.environ.get("AIRFLOW_HOME") or os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")):  # Airflow's own
        return None
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    except Exception as error:
        raise SettingsError(f"looking up the Airflow Connection {conn_id} failed: {error}") from error


@dataclass(frozen=True)
class AzureSql:
    """Azure SQL, the production warehouse: the same CRM_AZURE_* variables dbt's profile reads."""

    server: str | None
    database: str
    authentication: str  # "sql" (user, password) or "ServicePrincipal" (client id, secret)
    user: str | None
    password: str | None = field(repr=False)
    client_id: str | None
    client_secret: str | None = field(repr=False)
    tenant_id: str | None = None

    def odbc_connection_string(self) -> str:
        if not self.server:
            raise SettingsError("CRM_AZURE_SQL_SERVER is not set (the Azure SQL server to load into)")
        base = (
            "Driver={ODBC Driver 18 for SQL Server};"
            f"Server=tcp:{self.server},1433;Database={self.database};Encrypt=yes;TrustServerCertificate=no;"
            "Connection Timeout=30;"
        )
        if self.authentication.lower() == "serviceprincipal":
            if not (self.client_id and self.client_secret):
                raise SettingsError("CRM_AZURE_CLIENT_ID and CRM_AZURE_CLIENT_SECRET are needed for ServicePrincipal")
            return (
                base + f"Authentication=ActiveDirectoryServicePrincipal;UID={self.client_id};PWD={self.client_secret};"
            )
        if not (self.user and self.password):
            raise SettingsError("CRM_AZURE_SQL_USER and CRM_AZURE_SQL_PASSWORD are needed for sql authentication")
        return base + f"UID={self.user};PWD={self.password};"

    def dbt_env(self) -> dict[str, str]:
        """What dbt's ``azure`` output reads (``profiles.yml``), for a task's own process."""
        values = {"CRM_AZURE_SQL_SERVER": self.server, "CRM_AZURE_SQL_DATABASE": self.database,
                  "CRM_AZURE_SQL_AUTH": self.authentication, "CRM_AZURE_SQL_USER": self.user,
                  "CRM_AZURE_SQL_PASSWORD": self.password, "CRM_AZURE_CLIENT_ID": self.client_id,
                  "CRM_AZURE_CLIENT_SECRET": self.client_secret, "CRM_AZURE_TENANT_ID": self.tenant_id}  # fmt: skip
        return {name: value for name, value in values.items() if value}


@dataclass(frozen=True)
class Analyst:
    """The analysts' role on a server warehouse, and its password (None: the embedded server's)."""

    role: str
    password: str | None = field(repr=False)


@dataclass(frozen=True)
class Postgres:
    """A PostgreSQL warehouse: a server the bank runs, or (``embedded``) the one the project starts
    in the data directory, whose password is in ``passfile``."""

    host: str
    port: int
    user: str
    database: str
    password: str | None = field(repr=False)
    embedded: bool = False
    passfile: Path | None = None

    def url(self, database: str | None = None):
        """Its SQLAlchemy URL (psycopg2), to ``database`` or the warehouse's own."""
        import sqlalchemy as sa

        return sa.URL.create("postgresql+psycopg2", username=self.user, password=self.password, host=self.host,
                             port=self.port, database=database or self.database)  # fmt: skip

    def dbt_env(self) -> dict[str, str]:
        """What dbt's ``postgres`` output reads (``profiles.yml``): for the embedded server the
        password through libpq's password file, else the password itself (the Connection's, or
        ``CRM_POSTGRES_PASSWORD``'s): for a task's own process, never a DAG's declared ``env``."""
        env = {"CRM_POSTGRES_HOST": self.host, "CRM_POSTGRES_PORT": str(self.port),
               "CRM_POSTGRES_USER": self.user, "CRM_POSTGRES_DATABASE": self.database}  # fmt: skip
        if self.passfile is not None:
            env["PGPASSFILE"] = str(self.passfile)
        elif self.password:
            env["CRM_POSTGRES_PASSWORD"] = self.password
        return env


def embedded_postgres_port(home: Path) -> int:
    """The embedded PostgreSQL server's port: one per data directory, the same for every process
    (a DAG file knows it without starting anything), below Linux's ephemeral range."""
    import hashlib

    digest = hashlib.sha256(str(home.resolve()).encode()).digest()
    return 20000 + int.from_bytes(digest[:4], "big") % 10000


@dataclass(frozen=True)
class CoreApi:
    """Where the bank's integration API is and how to authenticate (OAuth2 client credentials)."""

    url: str | None  # None: the embedded sandbox bank
    client_id: str | None
    client_secret: str | None


@dataclass(frozen=True)
class TokenKeys:
    """The keys bearer tokens are verified with (both None: the local development key)."""

    jwks_url: str | None
    public_key_file: Path | None


def _metrics_port() -> int | None:
    return _int("CRM_METRICS_PORT", 9100 if _environment() == "production" else 0) or None


def _environment() -> str:
    value = _env("CRM_ENVIRONMENT", "local")
    if value not in ENVIRONMENTS:
        raise SettingsError(f"CRM_ENVIRONMENT must be one of {', '.join(ENVIRONMENTS)}, got {value!r}")
    return value


def _dbt_target() -> str:
    """``CRM_DBT_TARGET``: production's warehouse is Azure SQL unless another server is named, and
    never the embedded DuckDB file (one writing process, on one pod's disk)."""
    production = _environment() == "production"
    target = _env("CRM_DBT_TARGET") or ("azure" if production else "local")
    if production and target == "local":
        raise SettingsError(
            "CRM_ENVIRONMENT=production and CRM_DBT_TARGET=local: the embedded DuckDB warehouse is for development; "
            "set CRM_DBT_TARGET=azure (or postgres) and the warehouse's Connection crm_warehouse"
        )
    return target


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: Path(_env("CRM_HOME", str(REPO_ROOT / ".crm"))))
    # "production" forbids every embedded stand-in: the sandbox bank, the embedded Redis, a local
    # MLflow store, a model trained on the spot; what is not configured stops the work, named
    environment: str = field(default_factory=_environment)

    # core-banking sandbox (used when no integration API is configured)
    sandbox_customers: int = field(default_factory=lambda: _int("CRM_SANDBOX_CUSTOMERS", 5000))
    sandbox_seed: int = field(default_factory=lambda: _int("CRM_SANDBOX_SEED", 42))
    # faults the embedded sandbox injects (sandbox.faults): "" none, "all", or "name=rate,..."
    sandbox_faults: str = field(default_factory=lambda: _env("CRM_SANDBOX_FAULTS", ""))

    # orchestration: retries of each task of the DAGs (make demo and the tests use 0)
    task_retries: int = field(default_factory=lambda: _int("CRM_TASK_RETRIES", 2))
    task_retry_delay_s: int = field(default_factory=lambda: _int("CRM_TASK_RETRY_DELAY_S", 120))
    # how long any task of the DAGs may run before Airflow fails it (nothing hangs a run)
    task_timeout_minutes: int = field(default_factory=lambda: _int("CRM_TASK_TIMEOUT_MINUTES", 120))
    # how long a DAG run may take before Airflow fails it (and its failure is e-mailed)
    dagrun_timeout_hours: float = field(default_factory=lambda: _float("CRM_DAGRUN_TIMEOUT_HOURS", 12.0))
    # crm_model_training trains after the crm_daily of a business date on this weekday (0 Monday)
    training_weekday: int = field(default_factory=lambda: _weekday("CRM_TRAINING_WEEKDAY", "Saturday"))
    # the Lima time on D+1 by which D's snapshot must be live (crm_daily's deadline alert)
    snapshot_deadline_lima: dt.time = field(default_factory=lambda: _time("CRM_SNAPSHOT_DEADLINE_LIMA", "07:00"))

    # extraction
    api_max_retries: int = field(default_factory=lambda: _int("CRM_API_MAX_RETRIES", 6))
    api_timeout_s: float = field(default_factory=lambda: _float("CRM_API_TIMEOUT_S", 30.0))
    # the longest wait a Retry-After from the integration API may impose before a retry
    api_max_retry_after_s: float = field(default_factory=lambda: _float("CRM_API_MAX_RETRY_AFTER_S", 60.0))
    page_size: int = field(default_factory=lambda: _int("CRM_PAGE_SIZE", 2000))
    # the daily extraction re-reads this many days before the business date (late bookings and
    # responses); earlier days come from the warehouse, extracted once
    late_arrival_days: int = field(default_factory=lambda: _int("CRM_LATE_ARRIVAL_DAYS", 3))
    transaction_lookback_days: int = field(default_factory=lambda: _int("CRM_TX_LOOKBACK_DAYS", 180))
    response_lookback_days: int = field(default_factory=lambda: _int("CRM_RESPONSE_LOOKBACK_DAYS", 365))
    # the warehouse's DuckDB (the load, dbt, scoring's reads) works under this much memory and
    # spills to disk past it (DuckDB's default is 80% of the machine's)
    duckdb_memory_mb: int = field(default_factory=lambda: _int("CRM_DUCKDB_MEMORY_MB", 2048, minimum=64))
    # the extraction's dedup (DuckDB) works under this much memory and spills past it
    extract_memory_mb: int = field(default_factory=lambda: _int("CRM_EXTRACT_MEMORY_MB", 256))
    max_quarantine_share: float = field(default_factory=lambda: _float("CRM_MAX_QUARANTINE_SHARE", 0.01))
    # a windowed extraction (a history load, a big bank's delta) is cut into slices of whole days of
    # about this many records (the API's count), one mapped task each, so that several workers
    # share it (CeleryExecutor); a small bank's history is one slice
    extract_slice_records: int = field(
        default_factory=lambda: _int("CRM_EXTRACT_SLICE_RECORDS", 5_000_000, minimum=1000)
    )
    # clear personal data (raw customers, their landing, the quarantine) is kept this many days
    raw_retention_days: int = field(default_factory=lambda: _int("CRM_RAW_RETENTION_DAYS", 35))
    # the read API's calls to the integration API for the mobile app (balances, transactions): a short
    # timeout and few retries (a person is waiting), and a circuit breaker that answers 503 with
    # Retry-After for CRM_BANK_BREAKER_RESET_S once CRM_BANK_BREAKER_FAILURES calls in a row failed
    bank_timeout_s: float = field(default_factory=lambda: _float("CRM_BANK_API_TIMEOUT_S", 3.0))
    bank_max_retries: int = field(default_factory=lambda: _int("CRM_BANK_API_RETRIES", 2))
    bank_breaker_failures: int = field(default_factory=lambda: _int("CRM_BANK_BREAKER_FAILURES", 5))
    bank_breaker_reset_s: float = field(default_factory=lambda: _float("CRM_BANK_BREAKER_RESET_S", 30.0))
    # landing gate: a landed entity's rows may differ from the previous business date's by this share
    max_volume_change: float = field(default_factory=lambda: _float("CRM_MAX_VOLUME_CHANGE", 0.5))

    # warehouse
    dbt_target: str = field(default_factory=lambda: _dbt_target())
    server_pool_slots: int = field(default_factory=lambda: _int("CRM_WAREHOUSE_POOL_SLOTS", 8, minimum=1))

    # assignment
    max_offers_per_customer: int = field(default_factory=lambda: _int("CRM_MAX_OFFERS", 3))
    model_name: str = field(default_factory=lambda: _env("CRM_MODEL_NAME", "crm-campaign-propensity"))

    # cache
    snapshot_ttl_hours: float = field(default_factory=lambda: _float("CRM_SNAPSHOT_TTL_HOURS", 24.0))
    # a snapshot past its TTL keeps serving, flagged stale, this long (a late daily run)
    snapshot_grace_hours: float = field(default_factory=lambda: _float("CRM_SNAPSHOT_GRACE_HOURS", 6.0))
    # publish guard: refuse a snapshot whose audience shrank by more than this share of the live one
    max_audience_shrink: float = field(default_factory=lambda: _float("CRM_MAX_AUDIENCE_SHRINK", 0.3))
    redis_prefix: str = field(default_factory=lambda: _env("CRM_REDIS_PREFIX", "crm"))
    # the Data Docs' scripts and styles come from it once (expectations/data_docs.py)
    npm_registry: str = field(default_factory=lambda: _env("CRM_NPM_REGISTRY", "https://registry.npmjs.org"))
    # the read API answers 503 when Redis has not answered a request's reads within this time
    redis_deadline_s: float = field(default_factory=lambda: _float("CRM_REDIS_DEADLINE_S", 2.0))
    # a replaced snapshot stays readable this long (an export that started on it finishes from it)
    snapshot_drain_seconds: int = field(default_factory=lambda: _int("CRM_SNAPSHOT_DRAIN_SECONDS", 900))

    # identity: bearer tokens signed by the bank's identity provider (customers and staff)
    jwt_issuer: str = field(default_factory=lambda: _env("CRM_JWT_ISSUER", "crm-dev"))
    jwt_audience: str = field(default_factory=lambda: _env("CRM_JWT_AUDIENCE", "crm-read-api"))
    # the claim naming the caller's role: customer, sales or marketing
    jwt_role_claim: str = field(default_factory=lambda: _env("CRM_JWT_ROLE_CLAIM", "crm_role"))
    # the read API's Prometheus metrics on a port of their own (the cluster's scraper, never the
    # public route); production serves them there only (default 9100), locally on the API's port
    metrics_port: int | None = field(default_factory=lambda: _metrics_port())
    # quotas per caller (person or integration), shared by every API worker through Redis
    quota_lookups_per_minute: int = field(default_factory=lambda: _int("CRM_QUOTA_LOOKUPS_PER_MINUTE", 600))
    quota_exports_per_day: int = field(default_factory=lambda: _int("CRM_QUOTA_EXPORTS_PER_DAY", 50))
    # segment rows (pages and CSV exports together) a caller may read a day
    quota_segment_rows_per_day: int = field(
        default_factory=lambda: _int("CRM_QUOTA_SEGMENT_ROWS_PER_DAY", 250_000, minimum=1)
    )
    # integration keys: a running API re-reads the key store (revocations, new keys) this often
    api_key_reload_s: float = field(default_factory=lambda: _float("CRM_API_KEY_RELOAD_S", 10.0))
    # the addresses of the router in front of the API (comma-separated IPs or CIDRs): only their
    # X-Forwarded-For / X-Forwarded-Proto are believed; none by default (the peer is the source)
    trusted_proxies: str = field(default_factory=lambda: _env("CRM_TRUSTED_PROXIES", ""))
    # the audit trail's seals: each API process seals its file this often (when it wrote since)
    audit_seal_s: float = field(default_factory=lambda: _float("CRM_AUDIT_SEAL_S", 5.0))

    # ---- paths in the data directory -------------------------------------------------------
    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def duckdb_path(self) -> Path:
        return Path(_env("CRM_DUCKDB_PATH", str(self.home / "warehouse.duckdb")))

    @property
    def warehouse_pool_slots(self) -> int:
        """Slots of the Airflow pool ``crm_warehouse`` every warehouse task runs in: one on DuckDB,
        which allows one writing process; ``CRM_WAREHOUSE_POOL_SLOTS`` on a server."""
        return 1 if self.dbt_target == "local" else self.server_pool_slots

    @property
    def postgres_dir(self) -> Path:
        """The embedded PostgreSQL server's data directory."""
        return self.home / "postgres"

    @property
    def postgres_bin(self) -> Path | None:
        """Where the embedded PostgreSQL server's programs are, when set (``CRM_POSTGRES_BIN``)."""
        configured = _env("CRM_POSTGRES_BIN")
        return Path(configured) if configured else None

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
        return Path(_env("CRM_API_KEYS_FILE", str(self.home / "api_keys.json")))

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
        return Path(_env("CRM_AUDIT_DIR", str(self.home / "audit")))

    @cached_property
    def audit_key_path(self) -> Path:
        """The secret the audit trail's MACs are keyed with (one key a line: the first signs, the
        others are retired keys kept to verify older files). Mounted by the deployment, never in
        the audit directory; locally made on first use beside the development signing key."""
        configured = _env("CRM_AUDIT_KEY_FILE")
        if configured is None:
            self._no_fallback("audit trail key", "CRM_AUDIT_KEY_FILE (a secret the deployment mounts)")
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

    # ---- external systems ------------------------------------------------------------------
    @property
    def production(self) -> bool:
        return self.environment == "production"

    def _no_fallback(self, what: str, configure: str) -> None:
        if self.production:
            raise SettingsError(
                f"CRM_ENVIRONMENT=production and no {what} is configured: set {configure}. "
                "Production never falls back to an embedded stand-in."
            )

    @cached_property
    def alert_emails(self) -> list[str]:
        """Who is e-mailed when a DAG run fails; production never runs a DAG that tells nobody."""
        addresses = [a.strip() for a in (_env("CRM_ALERT_EMAILS") or "").split(",") if a.strip()]
        for address in addresses:
            if "@" not in address:
                raise SettingsError(f"CRM_ALERT_EMAILS: {address!r} is not an e-mail address")
        if not addresses:
            self._no_fallback("recipient of failure alerts", "CRM_ALERT_EMAILS (and the Connection smtp_default)")
        return addresses

    @cached_property
    def mlflow_tracking_uri(self) -> str:
        uri = _env("CRM_MLFLOW_TRACKING_URI")
        if uri is None:
            self._no_fallback("model registry", "CRM_MLFLOW_TRACKING_URI (the MLflow server or Azure ML workspace)")
        return uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> str:
        return _env("CRM_MLFLOW_ARTIFACT_ROOT") or (self.home / "mlflow" / "artifacts").as_uri()

    @cached_property
    def redis_url(self) -> str | None:
        """The Redis URL to use, or None for the embedded server in the data directory."""
        url = _env("CRM_REDIS_URL")
        if url:
            return url
        conn = _airflow_connection("crm_redis")
        if conn is not None:
            return conn.get_uri()
        self._no_fallback("Redis", "the Airflow Connection crm_redis or CRM_REDIS_URL")
        return None

    @cached_property
    def token_keys(self) -> TokenKeys:
        """Where the keys that verify bearer tokens come from: the identity provider's JWKS URL, or
        a PEM public key file; locally, the development key ``crm token`` signs with."""
        jwks_url, key_file = _env("CRM_JWT_JWKS_URL"), _env("CRM_JWT_PUBLIC_KEY_FILE")
        if not (jwks_url or key_file):
            self._no_fallback("token verification key", "CRM_JWT_JWKS_URL or CRM_JWT_PUBLIC_KEY_FILE")
        if _env("CRM_JWT_ISSUER") is None:  # the development issuer's name would accept its tokens
            self._no_fallback("token issuer", "CRM_JWT_ISSUER (the bank's identity provider)")
        return TokenKeys(jwks_url=jwks_url, public_key_file=Path(key_file) if key_file else None)

    @cached_property
    def azure_sql(self) -> AzureSql:
        """Azure SQL: ``CRM_AZURE_SQL_*``, else the Airflow Connection ``crm_warehouse`` (host: the
        server, schema: the database, login and password: the SQL user's, or with extra
        ``{"authentication": "ServicePrincipal", "tenant_id": ...}`` the service principal's)."""
        server = _env("CRM_AZURE_SQL_SERVER")
        if server is None:
            conn = _airflow_connection("crm_warehouse")
            if conn is not None and conn.host:
                extra = conn.extra_dejson or {}
                # "ServicePrincipal" (dbt-sqlserver's word) or ODBC's "ActiveDirectoryServicePrincipal"
                principal = str(extra.get("authentication", "sql")).lower() in (
                    "serviceprincipal", "activedirectoryserviceprincipal")  # fmt: skip
                auth = "ServicePrincipal" if principal else "sql"
                return AzureSql(
                    server=conn.host,
                    database=conn.schema or "crm",
                    authentication=auth,
                    user=None if principal else conn.login,
                    password=None if principal else conn.password,
                    client_id=conn.login if principal else None,
                    client_secret=conn.password if principal else None,
                    tenant_id=extra.get("tenant_id"),
                )
            if self.dbt_target == "azure":
                self._no_fallback("Azure SQL warehouse", "the Airflow Connection crm_warehouse or CRM_AZURE_SQL_SERVER")
        return AzureSql(
            server=server,
            database=_env("CRM_AZURE_SQL_DATABASE", "crm"),
            authentication=_env("CRM_AZURE_SQL_AUTH", "sql"),
            user=_env("CRM_AZURE_SQL_USER"),
            password=_env("CRM_AZURE_SQL_PASSWORD"),
            client_id=_env("CRM_AZURE_CLIENT_ID"),
            client_secret=_env("CRM_AZURE_CLIENT_SECRET"),
            tenant_id=_env("CRM_AZURE_TENANT_ID"),
        )

    @cached_property
    def analyst(self) -> Analyst:
        """The analysts' role (``CRM_ANALYST_ROLE``) and its password (``CRM_ANALYST_PASSWORD``; the
        embedded server's own when unset): what ``crm sql`` connects as on a server, on an analyst's
        machine, never a task's."""
        return Analyst(_env("CRM_ANALYST_ROLE", "crm_analyst"), _env("CRM_ANALYST_PASSWORD"))

    @cached_property
    def postgres(self) -> Postgres:
        """The PostgreSQL warehouse (``CRM_DBT_TARGET=postgres``): ``CRM_POSTGRES_*``, else the
        Airflow Connection ``crm_warehouse``, else (not in production) the embedded server."""
        host, password = _env("CRM_POSTGRES_HOST"), _env("CRM_POSTGRES_PASSWORD")
        user, database = _env("CRM_POSTGRES_USER", "crm"), _env("CRM_POSTGRES_DATABASE", "crm")
        port = _int("CRM_POSTGRES_PORT", 5432, minimum=1)
        if host is None:
            conn = _airflow_connection("crm_warehouse")
            if conn is not None and conn.host:
                return Postgres(conn.host, conn.port or port, conn.login or user, conn.schema or database,
                                conn.password)  # fmt: skip
            self._no_fallback("PostgreSQL warehouse", "the Airflow Connection crm_warehouse or CRM_POSTGRES_HOST")
            passfile = self.home / "postgres.pgpass"  # beside the data directory it opens, kept with it
            embedded_port = _int("CRM_POSTGRES_PORT", embedded_postgres_port(self.home), minimum=1)
            return Postgres("127.0.0.1", embedded_port, user, database, None, embedded=True, passfile=passfile)
        return Postgres(host, port, user, database, password)

    @cached_property
    def core_api(self) -> CoreApi:
        url = _env("CRM_CORE_API_URL")
        client_id = _env("CRM_CORE_CLIENT_ID")
        secret = _env("CRM_CORE_CLIENT_SECRET")
        if url is None:
            conn = _airflow_connection("crm_core_banking")
            if conn is not None and conn.host:
                scheme = conn.schema or "https"
                port = f":{conn.port}" if conn.port else ""
                url = f"{scheme}://{conn.host}{port}"
                client_id = client_id or conn.login
                secret = secret or conn.password
        if url is None:
            self._no_fallback(
                "integration API",
                "the Airflow Connection crm_core_banking (or CRM_CORE_API_URL, CRM_CORE_CLIENT_ID and "
                "CRM_CORE_CLIENT_SECRET); the sandbox bank is never extracted in production",
            )
        if url is not None and not (client_id and secret):
            raise SettingsError(
                "CRM_CORE_API_URL is set but CRM_CORE_CLIENT_ID / CRM_CORE_CLIENT_SECRET are not "
                "(or the Airflow Connection crm_core_banking has no login/password)"
            )
        return CoreApi(url=url, client_id=client_id, client_secret=secret)

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
    """Settings as the environment says now (cheap; call it where needed, do not cache globally)."""
    return Settings()
