"""The sandbox bank served over HTTP, shaped like the bank's integration API.

``POST /oauth/token`` (OAuth2 client credentials) gives a bearer token that expires; every list
endpoint pages with an opaque ``cursor`` and a bounded ``page_size`` and answers
``{"data": [...], "next_cursor": "..." | null}``. Records come in customer order, so a cursor is
just the position of the next record and any page can be regenerated on its own.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable
from typing import Annotated

import numpy as np
import orjson
import pandas as pd
from fastapi import Depends, FastAPI, Form, Header, HTTPException, Path, Query
from fastapi.responses import Response

from models.core_banking import PRIMARY_KEYS, ExecutionMember
from sandbox.bank import Bank
from sandbox.draws import day_number
from sandbox.executions import COLUMNS
from sandbox.faults import FaultInjection, Faults, bad_kind, break_record, omitted, page_is_duplicated

MAX_PAGE_SIZE = 5000
NO_FAULTS = Faults()

Key = tuple[int, int, int]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
Generator = Callable[[np.ndarray], Iterable[tuple[Key, dict]]]


def _encode(key: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _decode(cursor: str | None) -> Key:
    if not cursor:
        return (1, 0, 0)
    try:
        a, b, c = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return (int(a), int(b), int(c))
    except (ValueError, TypeError):
        raise HTTPException(400, detail="malformed cursor") from None


def paginate(
    bank: Bank,
    generate: Generator,
    per_customer: float,
    cursor: str | None,
    page_size: int,
    entity: str,
    faults: Faults = NO_FAULTS,
) -> dict:
    """One page of ``generate`` records in (customer, day, index) order, starting at ``cursor``,
    with the page's data faults (broken records, a duplicate handed to the next page)."""
    start = _decode(cursor)
    out: list[tuple[Key, dict]] = []
    cid = start[0]
    while len(out) <= page_size and cid <= bank.size:
        # enough customers for the rest of the page (and the record after it), with a margin
        block = max(16, int((page_size + 1 - len(out)) / max(per_customer, 1e-6) * 1.15) + 1)
        ids = np.arange(cid, min(cid + block, bank.size + 1))
        out.extend(kr for kr in generate(ids) if kr[0] >= start)
        cid = int(ids[-1]) + 1
    if len(out) > page_size:
        last = page_size - 1 if page_is_duplicated(faults, bank.seed, entity, cursor or "") else page_size
        next_cursor = _encode(out[last][0])
        out = out[:page_size]
    else:
        next_cursor = None
    records = [r for _, r in out]
    key = PRIMARY_KEYS[entity]
    keys = [r[key] for r in records]
    kinds = bad_kind(faults, bank.seed, entity, keys)
    gone = omitted(faults, bank.seed, entity, keys)
    records = [break_record(r, k) if k else r for r, k, g in zip(records, kinds, gone, strict=True) if not g]
    return {"data": records, "next_cursor": next_cursor}


def count(
    bank: Bank,
    entity: str,
    *,
    as_of: dt.date | None = None,
    updated_since: dt.date | None = None,
    days: list[dt.date] | None = None,
) -> int:
    """How many records a listing holds over the whole bank (the API's control total), counted
    without building them."""
    if entity == "accounts" and updated_since is not None and updated_since > as_of:
        return 0
    counter = {
        "customers": lambda ids: len(bank.existing(ids, as_of, updated_since)),
        "accounts": lambda ids: bank.count_accounts(ids, as_of),
        "transactions": lambda ids: bank.count_transactions(ids, days),
        "campaign_responses": lambda ids: bank.count_campaign_responses(ids, days),
    }[entity]
    block = 20_000
    return sum(counter(np.arange(first, min(first + block, bank.size + 1))) for first in range(1, bank.size + 1, block))


def _days(date_from: dt.date, date_to: dt.date) -> list[dt.date]:
    if date_to < date_from:
        raise HTTPException(400, detail="date_to is before date_from")
    if (date_to - date_from).days > 731:
        raise HTTPException(400, detail="a date range may span at most two years")
    return [date_from + dt.timedelta(days=i) for i in range((date_to - date_from).days + 1)]


def record_stream(
    bank: Bank,
    entity: str,
    *,
    as_of: dt.date | None = None,
    updated_since: dt.date | None = None,
    days: list[dt.date] | None = None,
) -> tuple[Generator, float]:
    """The records of a listing as ``(cursor key, record)`` per block of customer ids, and about how
    many records a customer has in it (to size the blocks a page is generated from)."""
    if entity == "customers":

        def customers(ids: np.ndarray):
            return (((r["customer_id"], 0, 0), r) for r in bank.customers(ids, as_of, updated_since))

        return customers, 0.95
    if entity == "accounts":
        if updated_since is not None and updated_since > as_of:  # balances change daily: all or none
            return (lambda ids: iter(())), 2.1
        return (lambda ids: (((r["customer_id"], 0, r["account_id"] % 10), r) for r in bank.accounts(ids, as_of))), 2.1
    if entity == "transactions":

        def transactions(ids: np.ndarray):
            for r in bank.transactions(ids, days):
                tid = r["transaction_id"]
                yield (r["customer_id"], int(tid[1:7]), int(tid[-1])), r

        return transactions, 0.9 * len(days)
    if entity == "campaign_responses":

        def responses(ids: np.ndarray):
            rows = []
            for day in days:
                dn = day_number(day)
                for r in bank.campaign_responses(ids, day, as_of=as_of):
                    # a handed list's member: one record per campaign ("E...<campaign index, 3 digits>")
                    rid = r["response_id"]
                    rows.append(((r["customer_id"], dn, int(rid[-3:]) + 1 if rid[0] == "E" else 0), r))
            rows.sort(key=lambda kr: kr[0])
            return rows

        return responses, 0.019 * len(days)  # measured: about 0.019 responses per customer and day
    raise ValueError(f"unknown entity {entity!r}")


def create_app(bank: Bank, client_id: str, client_secret: str, faults: Faults = NO_FAULTS) -> FastAPI:
    app = FastAPI(
        title="Core-banking sandbox",
        description="A deterministic synthetic Peruvian retail bank behind an integration API.",
        version="1.0",
    )
    signing_key = hashlib.sha256(f"{client_secret}:{bank.seed}".encode()).digest()

    def issue_token() -> str:
        expiry = str(int(time.time() + faults.token_ttl_s))
        sig = hmac.new(signing_key, expiry.encode(), hashlib.sha256).hexdigest()
        return f"{expiry}.{sig}"

    def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise HTTPException(
                401,
                detail="missing bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        expiry, _, sig = authorization[7:].partition(".")
        good = hmac.new(signing_key, expiry.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(sig, good) or not expiry.isdigit() or int(expiry) < time.time():
            raise HTTPException(
                401,
                detail="invalid or expired token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    auth = [Depends(require_token)]

    @app.get("/healthz")
    def healthz() -> dict:
        return {
            "status": "ok",
            "customers": bank.size,
            "seed": bank.seed,
            "faults": faults.spec() if faults != NO_FAULTS else None,
        }

    @app.post("/oauth/token")
    def token(
        grant_type: Annotated[str, Form()],
        client_id_: Annotated[str, Form(alias="client_id")],
        client_secret_: Annotated[str, Form(alias="client_secret")],
    ) -> dict:
        if grant_type != "client_credentials":
            raise HTTPException(400, detail={"error": "unsupported_grant_type"})
        ok_id = hmac.compare_digest(client_id_, client_id)
        ok_secret = hmac.compare_digest(client_secret_, client_secret)
        if not (ok_id and ok_secret):
            raise HTTPException(401, detail={"error": "invalid_client"})
        return {
            "access_token": issue_token(),
            "token_type": "bearer",
            "expires_in": int(faults.token_ttl_s),
        }

    def listing(entity: str, page_size: int, cursor: str | None, **params) -> Response:
        generate, per_customer = record_stream(bank, entity, **params)
        page = paginate(bank, generate, per_customer, cursor, page_size, entity, faults)
        return Response(orjson.dumps(page), media_type="application/json")

    def control_total(entity: str, **params) -> dict:
        return {"entity": entity, "records": count(bank, entity, **params)}

    @app.get("/v1/customers", dependencies=auth)
    def customers(
        as_of: dt.date,
        updated_since: Annotated[dt.date | None, Query(description="only records changed on or after")] = None,
        page_size: PageSize = 1000,
        cursor: str | None = None,
    ) -> Response:
        return listing("customers", page_size, cursor, as_of=as_of, updated_since=updated_since)

    @app.get("/v1/accounts", dependencies=auth)
    def accounts(
        as_of: dt.date,
        updated_since: Annotated[dt.date | None, Query(description="only records changed on or after")] = None,
        page_size: PageSize = 1000,
        cursor: str | None = None,
    ) -> Response:
        return listing("accounts", page_size, cursor, as_of=as_of, updated_since=updated_since)

    @app.get("/v1/transactions", dependencies=auth)
    def transactions(
        date_from: dt.date, date_to: dt.date, page_size: PageSize = 1000, cursor: str | None = None
    ) -> Response:
        return listing("transactions", page_size, cursor, days=_days(date_from, date_to))

    @app.get("/v1/campaign-responses", dependencies=auth)
    def campaign_responses(
        date_from: dt.date, date_to: dt.date, page_size: PageSize = 1000, cursor: str | None = None
    ) -> Response:
        """Each day's campaign contacts and tracked control members, with their final responses."""
        return listing("campaign_responses", page_size, cursor, days=_days(date_from, date_to))

    @app.put("/v1/campaign-executions/{business_date}", dependencies=auth)
    def campaign_execution(business_date: dt.date, members: list[ExecutionMember]) -> dict:
        """The platform's list for ``business_date``: the bank contacts the ``contact`` members the
        next day and tracks the others (the control) without contacting them. Handing a date's list
        again replaces it."""
        if bank.executions is None:
            raise HTTPException(
                501, detail="this sandbox keeps no campaign executions (start it with --executions-dir)"
            )
        frame = pd.DataFrame([m.model_dump() for m in members], columns=COLUMNS)
        unknown = sorted(set(frame["campaign_id"]) - set(bank.campaign_ids))
        strangers = frame.loc[frame["customer_id"] > bank.size, "customer_id"].head(3).tolist()
        if unknown or strangers:
            raise HTTPException(422, detail=f"campaigns the bank does not run: {unknown or 'none'}; "
                                            f"customers it does not have: {strangers or 'none'}")  # fmt: skip
        if not bank.executions.save(business_date, frame):
            raise HTTPException(409, detail=f"the bank already worked {business_date + dt.timedelta(days=1)} "
                                            "on the list it had then; a list for it can no longer change")  # fmt: skip
        return {"business_date": business_date.isoformat(), "members": len(frame),
                "to_contact": int(frame["contact"].sum())}  # fmt: skip

    # one customer's accounts and transactions, as the bank's channels (the mobile app) read them
    def one_customer(customer_id: int, as_of: dt.date) -> np.ndarray:
        ids = bank.existing(np.array([customer_id], dtype=np.int64), as_of) if customer_id <= bank.size else []
        if len(ids) == 0:
            raise HTTPException(404, detail=f"customer {customer_id} is not the bank's on {as_of}")
        return ids

    @app.get("/v1/customers/{customer_id}/accounts", dependencies=auth)
    def customer_accounts(customer_id: Annotated[int, Path(gt=0)], as_of: dt.date) -> Response:
        accounts = bank.accounts(one_customer(customer_id, as_of), as_of)
        return Response(orjson.dumps({"data": accounts}), media_type="application/json")

    @app.get("/v1/customers/{customer_id}/transactions", dependencies=auth)
    def customer_transactions(
        customer_id: Annotated[int, Path(gt=0)],
        date_from: dt.date,
        date_to: dt.date,
        page_size: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,7}$")] = None,
    ) -> Response:
        """Newest first; ``cursor`` is the position of the next record."""
        days = _days(date_from, date_to)
        rows = bank.transactions(one_customer(customer_id, date_to), days)[::-1]
        start = int(cursor or 0)
        end = start + page_size
        body = {"data": rows[start:end], "next_cursor": str(end) if end < len(rows) else None}
        return Response(orjson.dumps(body), media_type="application/json")

    # control totals: how many distinct records a listing holds, to reconcile an extraction with
    @app.get("/v1/customers/count", dependencies=auth)
    def customers_count(as_of: dt.date, updated_since: dt.date | None = None) -> dict:
        return control_total("customers", as_of=as_of, updated_since=updated_since)

    @app.get("/v1/accounts/count", dependencies=auth)
    def accounts_count(as_of: dt.date, updated_since: dt.date | None = None) -> dict:
        return control_total("accounts", as_of=as_of, updated_since=updated_since)

    @app.get("/v1/transactions/count", dependencies=auth)
    def transactions_count(date_from: dt.date, date_to: dt.date) -> dict:
        return control_total("transactions", days=_days(date_from, date_to))

    @app.get("/v1/campaign-responses/count", dependencies=auth)
    def campaign_responses_count(date_from: dt.date, date_to: dt.date) -> dict:
        return control_total("campaign_responses", days=_days(date_from, date_to))

    if faults.any_transport:
        app.add_middleware(FaultInjection, faults=faults, seed=bank.seed)
    return app
