"""The read API against its own OpenAPI document: schemathesis generates requests from it and sends
them over HTTP to ``entrypoints.cli serve`` (as ``make serve`` runs it) on a real snapshot in Redis.

Every answer must be documented (status, content type, headers, body schema), none may be a 5xx,
malformed input must be refused, what breaks the document (a negative phase) must never get a 5xx,
and calls without a key must get 401.
"""

from __future__ import annotations

import datetime as dt

import pytest
import schemathesis
from assignments import assignments
from conftest import running_read_api
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth, negative_data_rejection, positive_data_acceptance

from ml.registry import ModelRef
from ml.score import write_assignments
from serving.auth import issue_keys, sign_dev_token
from serving.publish import publish_snapshot

D = dt.date(2026, 11, 3)


@pytest.fixture(scope="module")
def served(settings):
    home = settings.home / "openapi"
    s = settings.replace(home=home)
    s.ensure_dirs()
    write_assignments(
        D, assignments(30, [("CMP-CARD", "SMS"), ("CMP-LOAN", "EMAIL")]), ModelRef("crm-campaign-propensity", "1"), s
    )
    publish_snapshot(D, s)
    keys = issue_keys(s.api_keys_path)
    keys["customer"] = sign_dev_token(s, "3", "customer")
    try:
        with running_read_api(home) as url:
            yield url, keys
    finally:
        from crm.services import stop_redis

        stop_redis(s)  # publishing started this home's Redis; serve keeps what it did not start


def test_every_documented_call_answers_as_documented(served):
    """Each operation of the document, fuzzed: no 5xx, every answer as documented."""
    url, keys = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 10

    def fuzz(operation, headers: dict[str, str]) -> None:
        # a range of transactions must run forward and span at most 92 days: a rule across two
        # parameters OpenAPI cannot state, so a schema-valid from/to may get its documented 422
        excluded = [positive_data_acceptance] if operation.path == "/v1/me/transactions" else []

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def answers_as_documented(case):
            case.call_and_validate(headers=headers, excluded_checks=excluded)

        # the negative phase: parameters that break the document answer as documented, never a 5xx.
        # Left out there: its rejection check (it also counts as "negative" a request whose only
        # fault is an extra query parameter, which FastAPI ignores, or a missing Authorization, which
        # the headers passed here put back) and its check of ignored authentication (it breaks one
        # scheme and keeps the key passed here, which the document's alternative schemes accept).
        # Refusals are tested one by one in test_identity and test_security_review.
        @given(case=operation.as_strategy(GenerationMode.NEGATIVE))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def never_fails_on_what_breaks_the_document(case):
            case.call_and_validate(
                headers=headers, excluded_checks=[positive_data_acceptance, negative_data_rejection, ignored_auth]
            )

        answers_as_documented()
        if operation.path_parameters or operation.query:  # something to break
            never_fails_on_what_breaks_the_document()

    for operation in operations:
        if operation.path.startswith("/v1/me/"):  # a customer's own: the mobile app's bearer token
            fuzz(operation, {"Authorization": f"Bearer {keys['customer']}"})
        else:
            fuzz(operation, {"X-API-Key": keys["marketing"]})


def test_the_document_names_the_schemes_and_roles_of_every_business_endpoint(served):
    import httpx

    url, _ = served
    doc = httpx.get(f"{url}/openapi.json").json()
    assert doc["components"]["securitySchemes"] == {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    }
    business = {path: op["get"] for path, op in doc["paths"].items() if path.startswith("/v1/")}
    assert set(business) == {
        "/v1/me/offers",
        "/v1/me/balances",
        "/v1/me/transactions",
        "/v1/customers/{customer_id}/offers",
        "/v1/campaigns",
        "/v1/campaigns/{campaign_id}/customers",
        "/v1/snapshot",
    }
    for path, op in business.items():
        people_only = path.startswith("/v1/me/")
        assert op["security"] == ([{"Bearer": []}] if people_only else [{"Bearer": []}, {"ApiKey": []}]), path
        assert op["x-roles"], path
        assert {"200", "401", "403", "503"} <= set(op["responses"]), path
    for mine in ("/v1/me/offers", "/v1/me/balances", "/v1/me/transactions"):
        assert business[mine]["x-roles"] == ["customer"], mine
    assert business["/v1/customers/{customer_id}/offers"]["x-roles"] == ["marketing", "sales"]
