"""One place that resolves every path and setting of the platform.

Outside Airflow, settings come from ``CRM_*`` environment variables; inside a DAG's tasks the
secrets of external systems come from Airflow Connections (``crm_core_banking``, ``crm_redis``),
which Airflow also reads from ``AIRFLOW_CONN_*`` variables. A ``CRM_*`` variable, when set, wins.
When neither names an external system, the embedded local default is used (the sandbox bank, the
Redis server in the data directory), started on demand by :mod:`crm.services`.

No other module reads ``os.environ`` for configuration.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _int(name: str, default: int, minimum: int | None = None) -> int:
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
    raw = _env(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


ENVIRONMENTS = ("local", "production")


def _airflow_connection(conn_id: str):
    """The Airflow Connection ``conn_id`` when running with Airflow and it exists, else None. Only
    "not defined" means None: any other failure to look it up raises, naming the connection."""
    if not (_env("AIRFLOW_HOME") or _env(f"AIRFLOW_CONN_{conn_id.upper()}")):
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
    # how long any task of the DAGs may run before Airflow fails it (nothing hangs a run)
    task_timeout_minutes: int = field(default_factory=lambda: _int("CRM_TASK_TIMEOUT_MINUTES", 120))

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
    # the landing gate validates a landed file this many rows at a time (bounded memory)
    gate_batch_rows: int = field(default_factory=lambda: _int("CRM_GATE_BATCH_ROWS", 1_000_000, minimum=1000))
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
    dbt_target: str = field(default_factory=lambda: _env("CRM_DBT_TARGET", "local"))

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
        return AzureSql(
            server=_env("CRM_AZURE_SQL_SERVER"),
            database=_env("CRM_AZURE_SQL_DATABASE", "crm"),
            authentication=_env("CRM_AZURE_SQL_AUTH", "sql"),
            user=_env("CRM_AZURE_SQL_USER"),
            password=_env("CRM_AZURE_SQL_PASSWORD"),
            client_id=_env("CRM_AZURE_CLIENT_ID"),
            client_secret=_env("CRM_AZURE_CLIENT_SECRET"),
        )

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
