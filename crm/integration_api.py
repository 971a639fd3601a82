"""The client of the bank's integration API: OAuth2 client credentials, retries, cursor pages.

The extraction (``ingestion``) pages through it in bulk; the read API (``serving.mobile_bank``) calls it for
one customer's balances and transactions. Both get it from :func:`client_for`, which resolves where
the API is from the settings (the embedded sandbox bank locally; refused in production when the
bank's is not configured)."""

from __future__ import annotations

import functools
import logging
import random
import ssl
import time
from collections.abc import Iterator
from typing import Any, Self

import httpx
import orjson

from crm.services import ensure_sandbox
from crm.settings import Settings

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {429, 500, 502, 503, 504}


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS context of every client this process makes: building one loads the CA bundle (about
    20 ms), which each extraction's client and each health check of the sandbox paid again."""
    return httpx.create_ssl_context()


class IntegrationApiError(RuntimeError):
    """A call that failed for good; ``status`` is the bank's answer when it gave one that no retry
    changes (4xx), None when retries ran out (5xx, 429, timeouts, refused connections)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class IntegrationApiClient:
    """Pages through the integration API, renewing the token on 401 and retrying transient faults."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout_s: float = 30.0,
        max_retries: int = 6,
        backoff_s: float = 0.5,
        max_retry_after_s: float = 60.0,
    ):
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, verify=tls_context())
        self._client_id = client_id
        self._client_secret = client_secret
        self._token: str | None = None
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._max_retry_after_s = max_retry_after_s

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def _renew_token(self) -> None:
        resp = self._request(
            "POST",
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self._client_id,
                "client_secret": self._client_secret,
            },
            authenticated=False,
        )
        self._token = resp.json()["access_token"]

    def _request(self, method: str, path: str, *, authenticated: bool = True, **kwargs: Any) -> httpx.Response:
        renewed = False
        attempt = 0
        while True:
            if authenticated and self._token is None:
                self._renew_token()
            headers = {"Authorization": f"Bearer {self._token}"} if authenticated else {}
            # a token refused on the very call after its renewal is an auth failure (raised below);
            # one refused after anything else in between (a retry, a backoff) has expired: renew it
            just_renewed, renewed = renewed, False
            try:
                resp = self._http.request(method, path, headers=headers, **kwargs)
            except (httpx.TransportError, httpx.DecodingError) as exc:
                resp, error = None, exc
            else:
                error = None
                if resp.status_code == 401 and authenticated and not just_renewed:
                    log.info("the access token was refused (expired?): renewing it")
                    self._token, renewed = None, True
                    continue
                if resp.status_code < 400:
                    return resp
                if resp.status_code not in RETRYABLE_STATUS:
                    raise IntegrationApiError(
                        f"{method} {path} answered {resp.status_code}: {resp.text[:300]}", resp.status_code
                    )
            attempt += 1
            if attempt > self._max_retries:
                what = f"status {resp.status_code}" if resp is not None else repr(error)
                raise IntegrationApiError(f"{method} {path} failed after {self._max_retries} retries: {what}")
            delay = self._backoff_s * 2 ** (attempt - 1) * (0.5 + random.random())  # noqa: S311 - jitter
            if resp is not None and resp.headers.get("Retry-After", "").isdigit():
                # honoured, up to a bound: a gateway asking for an hour must not hang the task
                delay = max(delay, min(float(resp.headers["Retry-After"]), self._max_retry_after_s))
            why = f"status {resp.status_code}" if resp is not None else type(error).__name__
            log.warning("retrying %s %s in %.1fs (attempt %d): %s", method, path, delay, attempt, why)
            time.sleep(delay)

    def pages(self, path: str, params: dict[str, Any], page_size: int) -> Iterator[list[dict]]:
        """Every page of a list endpoint, in order."""
        for data, _ in self.pages_from(path, params, page_size):
            yield data

    def pages_from(
        self, path: str, params: dict[str, Any], page_size: int, cursor: str | None = None
    ) -> Iterator[tuple[list[dict], str | None]]:
        """The pages of a list endpoint from ``cursor`` on (the first page when None), each with
        the cursor of the page after it (None after the last)."""
        while True:
            query = {**params, "page_size": page_size, **({"cursor": cursor} if cursor else {})}
            body = orjson.loads(self._request("GET", path, params=query).content)
            cursor = body.get("next_cursor")
            yield body["data"], cursor
            if not cursor:
                return

    def get_json(self, path: str, params: dict[str, Any]) -> Any:
        """One GET (retried like every call), its JSON body."""
        return orjson.loads(self._request("GET", path, params=params).content)

    def put_json(self, path: str, body: Any) -> Any:
        """One PUT of a JSON body (retried like every call: a PUT replaces, so a retry is harmless),
        its JSON answer."""
        return orjson.loads(self._request("PUT", path, json=body).content)

    def control_total(self, path: str, params: dict[str, Any]) -> int:
        """How many distinct records the list endpoint ``path`` holds for ``params``."""
        return int(self._request("GET", f"{path}/count", params=params).json()["records"])


def _endpoint(settings: Settings) -> tuple[str, str, str]:
    api = settings.core_api
    if api.url is None:
        sandbox = ensure_sandbox(settings.sandbox.customers, settings.sandbox.seed, settings, settings.sandbox.faults)
        return sandbox.url, sandbox.client_id, sandbox.client_secret
    return api.url, api.client_id, api.client_secret


def api_url(settings: Settings) -> str:
    """The base URL of the integration API the settings' client reaches (the sandbox's when embedded)."""
    return _endpoint(settings)[0]


def client_for(settings: Settings, **overrides: Any) -> IntegrationApiClient:
    """The client of the configured integration API (the embedded sandbox bank when none is, outside
    production); ``overrides`` (timeout_s, max_retries, ...) on top of the settings'."""
    url, client_id, secret = _endpoint(settings)
    options = {
        "max_retries": settings.extraction.api_max_retries,
        "timeout_s": settings.extraction.api_timeout_s,
        "max_retry_after_s": settings.extraction.api_max_retry_after_s,
        **overrides,
    }
    return IntegrationApiClient(url, client_id, secret, **options)
