"""Production fails closed: with CRM_ENVIRONMENT=production nothing falls back to an embedded
stand-in. What is not configured stops the work with an error that names the Connection or the
variable to set; the sandbox bank is never extracted, no embedded Redis or local MLflow store is
started, and no model is trained on the spot."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from crm.services import ensure_redis, read_sandbox, running_services
from crm.settings import Settings, SettingsError
from ingestion.extract import extract_entity
from ml.score import ensure_champion

D = dt.date(2026, 11, 27)


@pytest.fixture
def production(monkeypatch, tmp_path) -> Settings:
    monkeypatch.setenv("CRM_ENVIRONMENT", "production")
    for var in ("CRM_CORE_API_URL", "CRM_REDIS_URL", "CRM_MLFLOW_TRACKING_URI", "CRM_JWT_JWKS_URL",
                "CRM_JWT_PUBLIC_KEY_FILE", "CRM_JWT_ISSUER", "CRM_METRICS_PORT"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    s = Settings(home=tmp_path)
    s.ensure_dirs()
    return s


def test_the_extraction_without_the_core_banking_connection_fails_naming_it(production):
    with pytest.raises(SettingsError, match="Airflow Connection crm_core_banking") as stopped:
        extract_entity("customers", D, production)
    assert "sandbox bank is never extracted in production" in str(stopped.value)
    assert read_sandbox(production) is None  # no sandbox was started in its place
    assert not (production.landing_dir / "customers").exists()


def test_no_embedded_redis_in_production(production):
    with pytest.raises(SettingsError, match="Airflow Connection crm_redis or CRM_REDIS_URL"):
        ensure_redis(production)
    assert running_services(production) == set()


def test_no_local_model_registry_and_no_model_trained_on_the_spot(production, monkeypatch, tmp_path):
    with pytest.raises(SettingsError, match="CRM_MLFLOW_TRACKING_URI"):
        _ = production.mlflow_tracking_uri
    monkeypatch.setenv("CRM_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'registry.db'}")  # named, and empty
    s = Settings(home=tmp_path)
    with pytest.raises(
        RuntimeError, match=r"no crm-campaign-propensity model with alias champion .* run crm_model_training"
    ):
        ensure_champion(D, s)
    assert not (tmp_path / "warehouse.duckdb").exists()  # it did not start building a training set


def test_the_read_api_verifies_tokens_only_with_the_banks_identity_provider(production, monkeypatch, tmp_path):
    """No development signing key in production: without the identity provider's keys the API does
    not start, and ``crm token`` signs nothing."""
    from serving.api import create_app
    from serving.auth import sign_dev_token

    with pytest.raises(SettingsError, match="CRM_JWT_JWKS_URL or CRM_JWT_PUBLIC_KEY_FILE"):
        create_app("redis://127.0.0.1:9/0", production)
    with pytest.raises(SettingsError, match="identity provider"):
        sign_dev_token(production, "7", "customer")
    assert not production.dev_signing_key_path.exists()


def test_the_read_api_calls_only_the_banks_integration_api(production, monkeypatch, tmp_path):
    """The mobile app's balances and transactions: without the bank's integration API configured the
    API does not start in production (no sandbox bank behind a customer's balances)."""
    from serving.api import create_app

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    (tmp_path / "idp.pem").write_bytes(
        key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    monkeypatch.setenv("CRM_JWT_PUBLIC_KEY_FILE", str(tmp_path / "idp.pem"))
    monkeypatch.setenv("CRM_JWT_ISSUER", "https://idp.bank.example")
    with pytest.raises(SettingsError, match="crm_core_banking"):
        create_app("redis://127.0.0.1:9/0", Settings(home=tmp_path))


def test_in_production_the_api_publishes_its_business_calls_only(production, settings, tmp_path):
    """``crm serve`` in production: no /docs or /openapi.json, /metrics on the internal port only
    (and nothing else there); the business calls and the probes on the public one."""
    import httpx
    import jwt
    from conftest import running_read_api
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from crm.services import free_port
    from serving.auth import issue_keys

    idp = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # the bank's identity provider
    public = tmp_path / "idp.pem"
    public.write_bytes(idp.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    keys = issue_keys(tmp_path / "api_keys.json")
    metrics_port = free_port()
    env = {"CRM_ENVIRONMENT": "production", "CRM_REDIS_URL": ensure_redis(settings), "CRM_JWT_PUBLIC_KEY_FILE":
           str(public), "CRM_JWT_ISSUER": "https://idp.bank.example", "CRM_API_KEYS_FILE": str(tmp_path /
           "api_keys.json"), "CRM_METRICS_PORT": str(metrics_port), "CRM_CORE_API_URL": "https://api.bank.example",
           "CRM_CORE_CLIENT_ID": "crm-read-api", "CRM_CORE_CLIENT_SECRET": "from-the-vault"}  # fmt: skip
    claims = {"iss": "https://idp.bank.example", "aud": "crm-read-api", "sub": "jose.paredes", "crm_role": "marketing",
              "exp": int(dt.datetime.now(dt.UTC).timestamp()) + 600}  # fmt: skip
    token = jwt.encode(claims, idp, algorithm="RS256")
    with running_read_api(tmp_path, env, ready="/healthz") as url:  # no snapshot is live in this Redis
        assert httpx.get(f"{url}/healthz").status_code == 200
        for hidden in ("/docs", "/openapi.json", "/redoc", "/metrics"):
            assert httpx.get(f"{url}{hidden}").status_code == 404, hidden
        assert httpx.get(f"{url}/v1/campaigns", headers={"X-API-Key": keys["marketing"]}).status_code in (200, 503)
        staff = httpx.get(f"{url}/v1/campaigns", headers={"Authorization": f"Bearer {token}"})
        assert staff.status_code in (200, 503)  # a token of the bank's provider (503: no snapshot in this Redis)
        internal = f"http://127.0.0.1:{metrics_port}"
        scraped = httpx.get(f"{internal}/metrics")
        assert scraped.status_code == 200 and 'crm_api_requests_total{endpoint="/v1/campaigns"' in scraped.text
        assert httpx.get(f"{internal}/v1/campaigns", headers={"X-API-Key": keys["marketing"]}).status_code == 404
    assert not production.dev_signing_key_path.exists() and not (tmp_path / "identity").exists()


def test_an_unknown_environment_is_refused(monkeypatch):
    monkeypatch.setenv("CRM_ENVIRONMENT", "prod")
    with pytest.raises(SettingsError, match="CRM_ENVIRONMENT must be one of local, production, got 'prod'"):
        Settings()
