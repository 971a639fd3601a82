"""Who may read what, against the read API on a real Redis: customers with bank-signed tokens read
their own offers only, staff tokens name the person, integration keys expire and are revoked
without a restart, and every refusal says why."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time

import httpx
import jwt
import pytest
from assignments import published_home
from conftest import running_read_api
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from waits import wait_until

from crm.services import ensure_redis
from crm.settings import REPO_ROOT
from serving.api import create_app
from serving.auth import issue_key, issue_keys, revoke_key, sign_dev_token

D = dt.date(2026, 11, 4)


@pytest.fixture(scope="module")
def home_settings(settings):
    with published_home(settings, "identity", D, [("CMP-A", "SMS"), ("CMP-B", "PHONE")], api_key_reload_s=0.2) as home:
        yield home


@pytest.fixture(scope="module")
def client(home_settings):
    with TestClient(create_app(ensure_redis(home_settings), home_settings)) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _audit(settings, predicate) -> dict:
    """The last audit record that ``predicate`` accepts (written before the answer left)."""
    from serving.audit import read_records

    return [r for r in read_records(settings.audit_dir) if predicate(r)][-1]


def test_a_customer_token_reads_its_own_offers_and_nobody_elses(client, home_settings):
    token = sign_dev_token(home_settings, "7", "customer")
    mine = client.get("/v1/me/offers", headers=bearer(token))
    assert mine.status_code == 200
    body = mine.json()
    assert body["customer_id"] == 7 and [o["campaign_id"] for o in body["offers"]] == ["CMP-A", "CMP-B"]
    # the app sees what to show, not the scores or the reasons
    assert all(set(o) == {"rank", "campaign_id", "offer_id", "channel", "valid_until"} for o in body["offers"])
    for path in ("/v1/customers/8/offers", "/v1/customers/7/offers", "/v1/campaigns", "/v1/snapshot",
                 "/v1/campaigns/CMP-A/customers"):  # fmt: skip
        refused = client.get(path, headers=bearer(token))
        assert refused.status_code == 403, path
    assert "own offers only" in client.get("/v1/customers/8/offers", headers=bearer(token)).json()["detail"]
    # a customer with no offers today gets an empty list, not a 404 that says who is a customer
    assert (
        client.get("/v1/me/offers", headers=bearer(sign_dev_token(home_settings, "999", "customer"))).json()["offers"]
        == []
    )
    own = _audit(home_settings, lambda e: e["who"] == "7" and e["what"] == "GET /v1/me/offers")
    assert own["customer_id"] == 7 and own["status"] == 200 and own["kind"] == "customer"
    # the attempt on another customer is on record too, refused
    tried = _audit(home_settings, lambda e: e["who"] == "7" and e["customer_id"] == 8)
    assert tried["status"] == 403 and tried["what"] == "GET /v1/customers/8/offers"


def test_staff_tokens_name_the_person_and_carry_the_role(client, home_settings):
    sales = sign_dev_token(home_settings, "ana.quispe", "sales")
    assert client.get("/v1/customers/7/offers", headers=bearer(sales)).json()["offers"][0]["reasons"]
    assert client.get("/v1/campaigns/CMP-A/customers", headers=bearer(sales)).status_code == 403
    marketing = sign_dev_token(home_settings, "luis.rojas", "marketing")
    assert client.get("/v1/campaigns/CMP-A/customers", headers=bearer(marketing)).json()["total"] == 20
    # staff have no /v1/me: only a customer's token has offers of its own
    assert client.get("/v1/me/offers", headers=bearer(sales)).status_code == 403
    entry = _audit(home_settings, lambda e: e["who"] == "ana.quispe" and e["status"] == 200)
    assert entry["kind"] == "staff" and entry["role"] == "sales" and entry["customer_id"] == 7
    segment = _audit(home_settings, lambda e: e["who"] == "luis.rojas")
    assert segment["what"] == "GET /v1/campaigns/CMP-A/customers" and segment["snapshot_id"]


def test_expired_wrongly_signed_and_foreign_tokens_get_401(client, home_settings):
    from serving.auth import _dev_private_key

    now = int(time.time())
    claims = {"iss": home_settings.identity.jwt_issuer, "aud": home_settings.identity.jwt_audience, "sub": "7", "crm_role": "customer",
              "iat": now - 7200, "exp": now - 3600}  # fmt: skip
    ours = _dev_private_key(home_settings, create=True)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "has expired": jwt.encode(claims, ours, algorithm="RS256"),
        "Signature verification failed": jwt.encode({**claims, "exp": now + 600}, stranger, algorithm="RS256"),
        "audience": jwt.encode({**claims, "exp": now + 600, "aud": "another-api"}, ours, algorithm="RS256"),
        "issuer": jwt.encode({**claims, "exp": now + 600, "iss": "someone-else"}, ours, algorithm="RS256"),
        "alg": jwt.encode({**claims, "exp": now + 600}, "a-shared-secret-of-32-bytes-or-more!", algorithm="HS256"),
    }
    for reason, token in cases.items():
        for path in ("/v1/me/offers", "/v1/snapshot"):
            resp = client.get(path, headers=bearer(token))
            assert resp.status_code == 401, (reason, path)
        assert reason.lower() in resp.json()["detail"].lower() or reason == "alg", resp.json()
    assert client.get("/v1/me/offers", headers={"Authorization": "Basic Zm9vOmJhcg=="}).status_code == 401
    assert client.get("/v1/me/offers").status_code == 401


def test_keys_are_for_integrations_with_a_name_an_expiry_and_a_revocation(client, home_settings):
    store = home_settings.api_keys_path
    key_id, key = issue_key(store, "sales", "crm-salesforce-sync", days=30)
    assert client.get("/v1/customers/7/offers", headers={"X-API-Key": key}).status_code == 200
    assert _audit(home_settings, lambda e: e["credential"] == key_id)["who"] == "crm-salesforce-sync"
    with pytest.raises(ValueError, match="bearer tokens"):
        issue_key(store, "mobile", "app", days=30)  # the app's users sign in; no shared mobile key

    assert revoke_key(store, key_id)
    # the running app re-reads the store (every 0.2 s here, 10 s by default)
    wait_until(
        lambda: client.get("/v1/customers/7/offers", headers={"X-API-Key": key}).status_code,
        until=lambda status: status != 200,
        message="the revoked key to stop working",
    )
    refused = client.get("/v1/customers/7/offers", headers={"X-API-Key": key})
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]

    # a key past its expiry, and a mobile key from an older store, get nothing
    expired = issue_keys(store, ("marketing",))["marketing"]
    data = json.loads(store.read_text())
    data["keys"][-1]["expires_at"] = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    from serving.auth import hash_key

    data["keys"].append({"key_id": "mobile-9", "role": "mobile", "sha256": hash_key("old-mobile-key")})
    # a key of this write alone, that the app accepts once it has re-read the store
    data["keys"].append({"key_id": "reread-1", "role": "sales", "sha256": hash_key("reread-probe")})
    store.write_text(json.dumps(data))
    wait_until(
        lambda: client.get("/v1/campaigns", headers={"X-API-Key": "reread-probe"}).status_code,
        until=lambda status: status == 200,
        message="the running app to re-read the key store",
    )
    resp = client.get("/v1/campaigns", headers={"X-API-Key": expired})
    assert resp.status_code == 401 and "expired" in resp.json()["detail"]
    assert client.get("/v1/customers/7/offers", headers={"X-API-Key": "old-mobile-key"}).status_code == 403


def test_crm_token_signs_what_make_serve_accepts(home_settings):
    """``crm token`` as a developer runs it, against ``make serve`` over HTTP."""
    env = {**os.environ, "CRM_HOME": str(home_settings.home)}

    def token(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "entrypoints.cli", "token", *args], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, check=True)  # fmt: skip
        return done.stdout.strip()

    customer, staff = token("--customer", "7", "--minutes", "5"), token("--staff", "rosa.flores", "--role", "marketing")
    assert jwt.get_unverified_header(customer)["alg"] == "RS256"
    assert jwt.decode(customer, options={"verify_signature": False})["exp"] - time.time() <= 300
    key_file = home_settings.dev_signing_key_path
    assert oct(key_file.stat().st_mode & 0o777) == "0o600" and oct(key_file.parent.stat().st_mode & 0o777) == "0o700"
    serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    with running_read_api(home_settings.home) as url:
        assert httpx.get(f"{url}/v1/me/offers", headers=bearer(customer)).json()["customer_id"] == 7
        assert httpx.get(f"{url}/v1/campaigns", headers=bearer(staff)).status_code == 200
        assert httpx.get(f"{url}/v1/customers/8/offers", headers=bearer(customer)).status_code == 403
    usage = subprocess.run([sys.executable, "-m", "entrypoints.cli", "token", "--staff", "x"], env=env, cwd=REPO_ROOT,
                           capture_output=True, text=True)  # fmt: skip
    assert usage.returncode != 0 and "--role" in usage.stderr
