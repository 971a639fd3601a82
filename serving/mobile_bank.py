"""The signed-in customer's balances and transactions, read from the bank's integration API for the
mobile app (``GET /v1/me/balances``, ``GET /v1/me/transactions``).

The read API calls the bank through the extraction's own client (``crm.integration_api``: OAuth2
client credentials, timeouts, retries of these idempotent reads), with a short timeout and few
retries since a person is waiting. A circuit breaker (pybreaker) stops calling a failing bank: after
``CRM_BANK_BREAKER_FAILURES`` failed calls in a row it answers 503 with ``Retry-After`` at once for
``CRM_BANK_BREAKER_RESET_S`` seconds, then lets one call through to try the bank again. Nothing the
bank answers is kept beyond the request, and only the fields the app shows leave the API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import threading
import time
from typing import Any

import pybreaker

from crm.integration_api import IntegrationApiClient, IntegrationApiError, client_for
from crm.settings import Settings

MAX_DAYS = 92  # the longest range of transactions one request may ask for
PAGE_SIZE = 50


class BankUnavailable(Exception):
    """The bank's API is failing (or the breaker is open): 503, retry after ``retry_after`` s."""

    def __init__(self, detail: str, retry_after: float):
        super().__init__(detail)
        self.detail, self.retry_after = detail, max(1, math.ceil(retry_after))


class NotTheBanks(Exception):
    """The bank does not know the customer (404)."""


def _answer_from_the_client(exc: BaseException) -> bool:
    """A 4xx from the bank is an answer, not a failure of the bank: it does not trip the breaker."""
    return isinstance(exc, IntegrationApiError) and exc.status is not None and exc.status < 500


def masked_account(account_id: Any) -> str:
    return "****" + str(account_id)[-4:].rjust(4, "0")


class _OpenedAt(pybreaker.CircuitBreakerListener):
    def __init__(self) -> None:
        self.at = 0.0

    def state_change(self, cb, old_state, new_state) -> None:
        if new_state.name == pybreaker.STATE_OPEN:
            self.at = time.monotonic()


class CustomerBank:
    """One customer's reads from the integration API, behind a circuit breaker."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._client: IntegrationApiClient | None = None
        self._lock = threading.Lock()
        self._opened = _OpenedAt()
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=settings.serving.bank_breaker_failures,
            reset_timeout=settings.serving.bank_breaker_reset_s,
            exclude=[_answer_from_the_client],
            listeners=[self._opened],
            name="integration-api",
        )

    def _get(self, path: str, params: dict[str, Any]) -> dict:
        with self._lock:  # made on first use: locally that starts the sandbox bank
            if self._client is None:
                self._client = client_for(
                    self.settings,
                    timeout_s=self.settings.serving.bank_timeout_s,
                    max_retries=self.settings.serving.bank_max_retries,
                    backoff_s=0.1,
                    max_retry_after_s=1.0,
                )
        return self._client.get_json(path, params)

    def retry_after(self) -> float:
        return self.settings.serving.bank_breaker_reset_s - (time.monotonic() - self._opened.at)

    async def get(self, path: str, params: dict[str, Any]) -> dict:
        if self.breaker.current_state == pybreaker.STATE_OPEN and self.retry_after() > 0:
            raise BankUnavailable("the bank's API is failing: its calls are paused", self.retry_after())
        try:
            return await asyncio.to_thread(self.breaker.call, self._get, path, params)
        except pybreaker.CircuitBreakerError:
            raise BankUnavailable("the bank's API is failing: its calls are paused", self.retry_after()) from None
        except IntegrationApiError as exc:
            if exc.status == 404:
                raise NotTheBanks from None
            if _answer_from_the_client(exc):
                raise  # a request the bank refused: our fault, a 500 in the logs
            raise BankUnavailable("the bank's API did not answer", self.settings.serving.bank_timeout_s) from None

    async def balances(self, customer_id: int, as_of: dt.date) -> dict:
        body = await self.get(f"/v1/customers/{customer_id}/accounts", {"as_of": as_of.isoformat()})
        accounts = [
            {
                "account": masked_account(a["account_id"]),
                "product": a["product"],
                "currency": a["currency"],
                "balance": a["balance"],
            }
            for a in body["data"]
        ]
        return {"customer_id": customer_id, "as_of": as_of.isoformat(), "accounts": accounts}

    async def transactions(self, customer_id: int, date_from: dt.date, date_to: dt.date, cursor: str | None) -> dict:
        params = {"date_from": date_from.isoformat(), "date_to": date_to.isoformat(), "page_size": PAGE_SIZE}
        body = await self.get(
            f"/v1/customers/{customer_id}/transactions", {**params, **({"cursor": cursor} if cursor else {})}
        )
        movements = [
            {
                "transaction_id": t["transaction_id"],
                "booking_date": t["booking_date"],
                "type": t["type"],
                "merchant_category": t.get("merchant_category"),
                "amount": t["amount"],
                "currency": t["currency"],
                "account": masked_account(t["account_id"]),
            }
            for t in body["data"]
        ]
        return {
            "customer_id": customer_id,
            "from": date_from.isoformat(),
            "to": date_to.isoformat(),
            "transactions": movements,
            "next_cursor": body.get("next_cursor"),
        }
