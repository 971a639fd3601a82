"""The external systems the settings name, as the stages receive them: the bank's integration API,
the warehouses (Azure SQL, PostgreSQL), the keys bearer tokens are verified with; and the Airflow
Connections they may come from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def airflow_connection(conn_id: str):
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
    client_secret: str | None = field(repr=False)


@dataclass(frozen=True)
class TokenKeys:
    """The keys bearer tokens are verified with (both None: the local development key)."""

    jwks_url: str | None
    public_key_file: Path | None


# ---- resolved from the settings: the CRM_* variables, else the Airflow Connection, else (not in
# production) the embedded stand-in; ``settings`` is a crm.settings.Settings


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None


def redis_url(settings) -> str | None:
    """The Redis URL to use, or None for the embedded server in the data directory."""
    url = _secret(settings.serving.redis_url)
    if url:
        return url
    conn = airflow_connection("crm_redis")
    if conn is not None:
        return conn.get_uri()
    settings.no_fallback("Redis", "the Airflow Connection crm_redis or CRM_REDIS_URL")
    return None


def token_keys(settings) -> TokenKeys:
    """Where the keys that verify bearer tokens come from: the identity provider's JWKS URL, or a
    PEM public key file; locally, the development key ``crm token`` signs with."""
    identity = settings.identity
    jwks_url, key_file = identity.jwt_jwks_url, identity.jwt_public_key_file
    if not (jwks_url or key_file):
        settings.no_fallback("token verification key", "CRM_JWT_JWKS_URL or CRM_JWT_PUBLIC_KEY_FILE")
    if "jwt_issuer" not in identity.model_fields_set:  # the development issuer's name would accept its tokens
        settings.no_fallback("token issuer", "CRM_JWT_ISSUER (the bank's identity provider)")
    return TokenKeys(jwks_url=jwks_url, public_key_file=Path(key_file) if key_file else None)


def azure_sql(settings) -> AzureSql:
    """Azure SQL: ``CRM_AZURE_SQL_*``, else the Airflow Connection ``crm_warehouse`` (host: the
    server, schema: the database, login and password: the SQL user's, or with extra
    ``{"authentication": "ServicePrincipal", "tenant_id": ...}`` the service principal's)."""
    w = settings.warehouse
    if w.azure_sql_server is None:
        conn = airflow_connection("crm_warehouse")
        if conn is not None and conn.host:
            extra = conn.extra_dejson or {}
            # "ServicePrincipal" (dbt-sqlserver's word) or ODBC's "ActiveDirectoryServicePrincipal"
            principal = str(extra.get("authentication", "sql")).lower() in (
                "serviceprincipal", "activedirectoryserviceprincipal")  # fmt: skip
            return AzureSql(
                server=conn.host,
                database=conn.schema or "crm",
                authentication="ServicePrincipal" if principal else "sql",
                user=None if principal else conn.login,
                password=None if principal else conn.password,
                client_id=conn.login if principal else None,
                client_secret=conn.password if principal else None,
                tenant_id=extra.get("tenant_id"),
            )
        if settings.dbt_target == "azure":
            settings.no_fallback("Azure SQL warehouse", "the Airflow Connection crm_warehouse or CRM_AZURE_SQL_SERVER")
    return AzureSql(
        server=w.azure_sql_server,
        database=w.azure_sql_database,
        authentication=w.azure_sql_auth,
        user=w.azure_sql_user,
        password=_secret(w.azure_sql_password),
        client_id=w.azure_client_id,
        client_secret=_secret(w.azure_client_secret),
        tenant_id=w.azure_tenant_id,
    )


def analyst(settings) -> Analyst:
    """The analysts' role (``CRM_ANALYST_ROLE``) and its password (``CRM_ANALYST_PASSWORD``; the
    embedded server's own when unset): what ``crm sql`` connects as on a server, on an analyst's
    machine, never a task's."""
    return Analyst(settings.warehouse.analyst_role, _secret(settings.warehouse.analyst_password))


def postgres(settings) -> Postgres:
    """The PostgreSQL warehouse (``CRM_DBT_TARGET=postgres``): ``CRM_POSTGRES_*``, else the Airflow
    Connection ``crm_warehouse``, else (not in production) the embedded server."""
    w = settings.warehouse
    host, password, user, database = w.postgres_host, _secret(w.postgres_password), w.postgres_user, w.postgres_database
    if host is None:
        conn = airflow_connection("crm_warehouse")
        if conn is not None and conn.host:
            return Postgres(conn.host, conn.port or w.postgres_port or 5432, conn.login or user,
                            conn.schema or database, conn.password)  # fmt: skip
        settings.no_fallback("PostgreSQL warehouse", "the Airflow Connection crm_warehouse or CRM_POSTGRES_HOST")
        passfile = settings.home / "postgres.pgpass"  # beside the data directory it opens, kept with it
        port = w.postgres_port or embedded_postgres_port(settings.home)
        return Postgres("127.0.0.1", port, user, database, None, embedded=True, passfile=passfile)
    return Postgres(host, w.postgres_port or 5432, user, database, password)


def core_api(settings) -> CoreApi:
    """The bank's integration API: ``CRM_CORE_*``, else the Airflow Connection ``crm_core_banking``,
    else (not in production) the embedded sandbox bank (``url`` None)."""
    e = settings.extraction
    url, client_id, secret = e.core_api_url, e.core_client_id, _secret(e.core_client_secret)
    if url is None:
        conn = airflow_connection("crm_core_banking")
        if conn is not None and conn.host:
            scheme = conn.schema or "https"
            port = f":{conn.port}" if conn.port else ""
            url = f"{scheme}://{conn.host}{port}"
            client_id = client_id or conn.login
            secret = secret or conn.password
    if url is None:
        settings.no_fallback(
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
