"""The read API's settings: the cache it serves from (``Serving``), who may call it and its audit
trail (``Identity``), and how much each caller may read (``Quotas``). See :mod:`crm.settings.groups`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr, field_validator

from crm.settings.groups import Concern, var


class Serving(Concern):
    area: ClassVar[str] = "the cache and the read API"
    redis_url: SecretStr | None = var(
        "CRM_REDIS_URL",
        None,
        "`redis://`, `rediss://` with a password (Azure Cache for Redis), any node of a Redis "
        "Cluster (or the Airflow Connection `crm_redis`); required in production",
        shown="the embedded server on `.crm/run/redis.sock`",
    )
    redis_prefix: str = var("CRM_REDIS_PREFIX", "crm", "prefix of every key the platform writes in Redis")
    snapshot_ttl_hours: float = var("CRM_SNAPSHOT_TTL_HOURS", 24.0, "how long a cache snapshot is fresh", gt=0)
    snapshot_grace_hours: float = var(
        "CRM_SNAPSHOT_GRACE_HOURS",
        6.0,
        "how long a snapshot past its TTL keeps serving, flagged stale, when the next run is late",
        ge=0,
    )
    snapshot_drain_seconds: int = var(
        "CRM_SNAPSHOT_DRAIN_SECONDS",
        900,
        "how long a replaced snapshot stays readable, so an export that started on it finishes from it",
        ge=0,
    )
    max_audience_shrink: float = var(
        "CRM_MAX_AUDIENCE_SHRINK",
        0.3,
        "publish guard: a snapshot serving a larger share fewer customers than the live one is refused",
        ge=0,
        le=1,
    )
    redis_deadline_s: float = var(
        "CRM_REDIS_DEADLINE_S",
        2.0,
        "the read API answers 503 when Redis has not answered a request's reads by then",
        gt=0,
    )
    trusted_proxies: str = var(
        "CRM_TRUSTED_PROXIES",
        "",
        "IPs or CIDRs (comma-separated) of the router in front of the read API: only their "
        "`X-Forwarded-For` / `X-Forwarded-Proto` are believed",
    )
    metrics_port: int | None = var(
        "CRM_METRICS_PORT",
        None,
        "the port `/metrics` (Prometheus) is served on, and nothing else there (0: on the API's port)",
        shown="9100 in production; locally none (`/metrics` on the API's port)",
        ge=0,
    )
    bank_timeout_s: float = var(
        "CRM_BANK_API_TIMEOUT_S",
        3.0,
        "timeout of the read API's calls to the integration API for the mobile app "
        "(balances, transactions): a person is waiting",
        gt=0,
    )
    bank_max_retries: int = var("CRM_BANK_API_RETRIES", 2, "retries of those calls", ge=0)
    bank_breaker_failures: int = var(
        "CRM_BANK_BREAKER_FAILURES", 5, "failed calls in a row that open the circuit breaker", ge=1
    )
    bank_breaker_reset_s: float = var(
        "CRM_BANK_BREAKER_RESET_S",
        30.0,
        "seconds the open breaker answers 503 (with `Retry-After`) before it tries the bank again",
        gt=0,
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return url


class Identity(Concern):
    area: ClassVar[str] = "the read API: identity and audit trail"
    jwt_jwks_url: str | None = var(
        "CRM_JWT_JWKS_URL",
        None,
        "the bank's identity provider's keys (JWKS) that bearer tokens are verified with; "
        "this or `CRM_JWT_PUBLIC_KEY_FILE` is required in production",
        shown="the development key in `.crm/identity/`",
    )
    jwt_public_key_file: str | None = var(
        "CRM_JWT_PUBLIC_KEY_FILE", None, "a PEM public key to verify bearer tokens with, instead of a JWKS URL"
    )
    jwt_issuer: str = var("CRM_JWT_ISSUER", "crm-dev", "the tokens' issuer (`iss`); required in production")
    jwt_audience: str = var("CRM_JWT_AUDIENCE", "crm-read-api", "the tokens' audience (`aud`)")
    jwt_role_claim: str = var(
        "CRM_JWT_ROLE_CLAIM", "crm_role", "the token claim naming the caller's role: `customer`, `sales` or `marketing`"
    )
    api_keys_file: str | None = var(
        "CRM_API_KEYS_FILE",
        None,
        "the integration keys' store (hashes, names, roles, expiry); production never makes "
        "one: `crm serve` stops when it is missing",
        shown="`.crm/api_keys.json`",
    )
    api_key_reload_s: float = var(
        "CRM_API_KEY_RELOAD_S", 10.0, "a running API re-reads the key store (revocations, new keys) this often", gt=0
    )
    audit_directory: str | None = var(
        "CRM_AUDIT_DIR",
        None,
        "the read API's audit trail: one chained file per API process and day",
        shown="`.crm/audit`",
    )
    audit_key_file: str | None = var(
        "CRM_AUDIT_KEY_FILE",
        None,
        "the audit trail's HMAC key, one a line (the first signs; rotation in decision "
        "0015); a mounted secret, never inside the audit directory; required in production",
        shown="`.crm/identity/audit_key` (made locally)",
    )
    audit_seal_s: float = var("CRM_AUDIT_SEAL_S", 5.0, "how often a busy API process seals its audit file", gt=0)


class Quotas(Concern):
    area: ClassVar[str] = "the read API: quotas (per person or integration)"
    lookups_per_minute: int = var(
        "CRM_QUOTA_LOOKUPS_PER_MINUTE", 600, "customer look-ups a minute (sales, marketing, the mobile app)", ge=1
    )
    segment_rows_per_day: int = var(
        "CRM_QUOTA_SEGMENT_ROWS_PER_DAY",
        250_000,
        "segment rows a day, pages (API and console) and CSV exports together",
        ge=1,
    )
    exports_per_day: int = var("CRM_QUOTA_EXPORTS_PER_DAY", 50, "CSV exports of a segment a day", ge=0)


# the groups, as Settings' attributes, in the README table's order
