"""Production fails closed: with CRM_ENVIRONMENT=production nothing falls back to an embedded
stand-in. What is not configured stops the work with an error that names the Connection or the
variable to set; the sandbox bank is never extracted, no embedded Redis or local MLflow store is
started, and no model is trained on the spot."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from waits import wait_until

from crm.services import ensure_redis, free_port, read_sandbox, running_services
from crm.settings import REPO_ROOT, Settings, SettingsError
from entrypoints import tasks
from ingestion.extract import extract_entity

D = dt.date(2026, 11, 27)


@pytest.fixture
def production(monkeypatch, tmp_path) -> Settings:
    monkeypatch.setenv("CRM_ENVIRONMENT", "production")
    for var in ("CRM_CORE_API_URL", "CRM_REDIS_URL", "CRM_MLFLOW_TRACKING_URI", "CRM_JWT_JWKS_URL",
                "CRM_JWT_PUBLIC_KEY_FILE", "CRM_JWT_ISSUER", "CRM_METRICS_PORT", "CRM_DBT_TARGET"):  # fmt: skip
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
    monkeypatch.setenv("CRM_HOME", str(tmp_path))
    with pytest.raises(
        RuntimeError, match=r"no crm-campaign-propensity model with alias champion .* run crm_model_training"
    ):
        tasks.ensure_model(D)  # crm_daily's task: locally it would train a first model
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
    from serving.auth import issue_keys

    issue_keys(tmp_path / "api_keys.json")  # the key store, made beforehand by the bank's operators
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
    (tmp_path / "audit.key").write_text("k" * 64)
    env = {"CRM_ENVIRONMENT": "production", "CRM_REDIS_URL": ensure_redis(settings), "CRM_JWT_PUBLIC_KEY_FILE":
           str(public), "CRM_JWT_ISSUER": "https://idp.bank.example", "CRM_API_KEYS_FILE": str(tmp_path /
           "api_keys.json"), "CRM_METRICS_PORT": str(metrics_port), "CRM_CORE_API_URL": "https://api.bank.example",
           "CRM_CORE_CLIENT_ID": "crm-read-api", "CRM_CORE_CLIENT_SECRET": "from-the-vault",
           "CRM_AUDIT_KEY_FILE": str(tmp_path / "audit.key")}  # fmt: skip
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
        # the look-ups answered ahead of every other layer too: the metrics port answers /metrics only
        for path in ("/v1/customers/1/offers", "/v1/me/offers"):
            assert httpx.get(f"{internal}{path}", headers={"X-API-Key": keys["marketing"]}).status_code == 404, path
        # the console's cookie is Secure in production, over whatever scheme the request says it came
        signed_in = httpx.post(f"{url}/console/sign-in", data={"token": token}, headers={"X-Forwarded-Proto": "http"})
        assert signed_in.status_code == 303 and "secure" in signed_in.headers["set-cookie"].lower()
    assert not production.dev_signing_key_path.exists() and not (tmp_path / "identity").exists()


def test_an_unknown_environment_is_refused(monkeypatch):
    monkeypatch.setenv("CRM_ENVIRONMENT", "prod")
    with pytest.raises(SettingsError, match="CRM_ENVIRONMENT='prod': Input should be 'local' or 'production'"):
        Settings()


def _production_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """Every setting a production ``crm serve`` needs, its files outside the data directory."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    idp = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    (secrets / "idp.pem").write_bytes(
        idp.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (secrets / "audit.key").write_text("k" * 64)
    from serving.auth import issue_keys

    issue_keys(secrets / "api_keys.json")
    return {"CRM_ENVIRONMENT": "production", "CRM_REDIS_URL": redis_url, "CRM_JWT_PUBLIC_KEY_FILE":
            str(secrets / "idp.pem"), "CRM_JWT_ISSUER": "https://idp.bank.example", "CRM_API_KEYS_FILE":
            str(secrets / "api_keys.json"), "CRM_AUDIT_KEY_FILE": str(secrets / "audit.key"),
            "CRM_CORE_API_URL": "https://api.bank.example", "CRM_CORE_CLIENT_ID": "crm-read-api",
            "CRM_CORE_CLIENT_SECRET": "from-the-vault", "AIRFLOW_HOME": ""}  # fmt: skip


@pytest.mark.parametrize(
    "variable, unset, named",
    [
        ("CRM_API_KEYS_FILE", "{tmp}/missing/api_keys.json", "CRM_API_KEYS_FILE"),
        ("CRM_JWT_PUBLIC_KEY_FILE", "", "CRM_JWT_JWKS_URL or CRM_JWT_PUBLIC_KEY_FILE"),
        ("CRM_JWT_ISSUER", "", "CRM_JWT_ISSUER"),
        ("CRM_AUDIT_KEY_FILE", "", "CRM_AUDIT_KEY_FILE"),
        ("CRM_AUDIT_KEY_FILE", "{tmp}/missing/audit.key", "CRM_AUDIT_KEY_FILE"),
        ("CRM_REDIS_URL", "", "CRM_REDIS_URL"),
        ("CRM_CORE_API_URL", "", "crm_core_banking"),
    ],
)
def test_production_serve_stops_with_one_line_naming_what_is_missing_and_writes_nothing(
    settings, tmp_path, variable, unset, named
):
    """``crm serve`` in production with one setting missing (a key store that does not exist, no
    identity provider, no audit key, no Redis, no bank API): one line naming it, no traceback, no
    key made, nothing written in the data directory."""
    home = tmp_path / "home"
    home.mkdir()
    unset = unset.format(tmp=tmp_path)  # a file that does not exist
    env = {**os.environ, **_production_env(tmp_path, ensure_redis(settings)), "CRM_HOME": str(home), variable: unset}
    done = subprocess.run([sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(free_port())], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    said = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(said) == 1, done.stdout + done.stderr
    assert said[0].startswith("crm: ") and named in said[0], said
    assert "Traceback" not in done.stdout + done.stderr
    assert list(home.rglob("*")) == []  # no key store, no demo keys, no audit trail, no identity key
    assert not (tmp_path / "missing").exists()


def test_sigterm_stops_everything_crm_serve_started(tmp_path):
    """``crm serve`` on a data directory with nothing running: it starts the embedded Redis, and a
    customer's balances start the sandbox bank; SIGTERM (what OpenShift and ``kill`` send) stops
    the API and both."""
    import httpx

    home = tmp_path / "home"
    s = Settings(home=home)
    port = free_port()
    env = {**os.environ, "CRM_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(port)], env=env,
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"

        def started() -> bool:
            assert proc.poll() is None, f"crm serve exited ({proc.returncode}) before it answered"
            return _answers(f"{url}/healthz")

        wait_until(started, timeout=60, interval=0.2, message="crm serve to answer /healthz")

        from serving.auth import sign_dev_token

        me = {"Authorization": f"Bearer {sign_dev_token(s, '12', 'customer')}"}
        assert httpx.get(f"{url}/v1/me/balances", headers=me, timeout=60).status_code == 200
        assert running_services(s) == {"redis", "sandbox"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    assert running_services(s) == set()


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url).status_code == 200
    except httpx.HTTPError:
        return False
