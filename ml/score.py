"""Daily scoring and assignment: champion model -> propensities -> arbitration -> warehouse."""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from crm.settings import Settings, get_settings
from crm.warehouse import connect
from ml.arbitrate import arbitrate, capacities
from ml.features import FEATURES, REASON_TEXT, scoring_batches
from ml.registry import CHAMPION, ModelRef, champion, mlflow_client
from ml.train import train_and_register

log = logging.getLogger(__name__)

ASSIGNMENTS_TABLE = "marts.customer_campaign_assignments"


class FeatureMismatch(RuntimeError):
    pass


@dataclass(frozen=True)
class ScoringResult:
    business_date: str
    model_name: str
    model_version: str
    pairs_scored: int
    customers_assigned: int
    assignments: int


def ensure_champion(business_date: dt.date, settings: Settings | None = None) -> ModelRef:
    """The champion model; trains and registers one first when the registry has none."""
    settings = settings or get_settings()
    ref = champion(settings)
    if ref is None:
        log.info("no %s model with alias %s: training one", settings.model_name, CHAMPION)
        result = train_and_register(business_date, settings)
        ref = ModelRef(result.model_name, result.version)
    return ref


def _check_signature(model_uri: str, columns: list[str]) -> None:
    """Fail with the column names when the model's signature and our features disagree."""
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    expected = set(signature.inputs.input_names()) if signature is not None else set(FEATURES)
    missing = sorted(expected - set(columns))
    unexpected = sorted(set(FEATURES) - expected)
    if missing or unexpected:
        raise FeatureMismatch(
            f"the features do not match the signature of {model_uri}: missing {missing or 'none'}, "
            f"not in the signature {unexpected or 'none'}"
        )


def _reasons(batch: pd.DataFrame, reference: dict[str, float]) -> list[str]:
    """Up to two readable reasons per row: the features where the customer is highest."""
    cols = list(REASON_TEXT)
    ratios = np.column_stack([batch[c].to_numpy() / max(reference[c], 1e-9) for c in cols])
    top = np.argsort(-ratios, axis=1, kind="stable")[:, :2]
    out = []
    for i, row in enumerate(top):
        texts = [REASON_TEXT[cols[k]] for k in row if ratios[i, k] > 1.2]
        texts.append(f"{batch['channel'].iat[i]} is the campaign's preferred channel the customer consented to")
        out.append(json.dumps(texts))
    return out


def score_and_assign(business_date: dt.date, settings: Settings | None = None) -> ScoringResult:
    """Score every eligible pair of ``business_date`` with the champion, arbitrate, write the result."""
    import mlflow

    settings = settings or get_settings()
    ref = ensure_champion(business_date, settings)
    mlflow_client(settings)
    model_uri = f"models:/{ref.name}@{CHAMPION}"
    model = mlflow.sklearn.load_model(model_uri)
    scored: list[pd.DataFrame] = []
    with connect(settings) as con:
        reference = {
            c: float(v or 0)
            for c, v in zip(
                REASON_TEXT,
                con.execute(
                    f"select {', '.join(f'median({c})' for c in REASON_TEXT)} from marts.customer_features "
                    "where as_of_date = ?",
                    [business_date],
                ).fetchone(),
                strict=True,
            )
        }
        campaign_capacity, channel_capacity = capacities(con)
        checked = False
        for batch in scoring_batches(con, business_date):
            if not checked:
                _check_signature(model_uri, list(batch.columns))
                checked = True
            propensity = model.predict_proba(batch[FEATURES])[:, 1]
            out = batch[
                [
                    "customer_id",
                    "campaign_id",
                    "offer_id",
                    "channel",
                    "value_pen",
                    "priority_weight",
                    "valid_until",
                ]
            ].copy()
            out["propensity"] = np.round(propensity, 6)
            out["reasons"] = _reasons(batch, reference)
            scored.append(out)
    pairs = pd.concat(scored, ignore_index=True) if scored else pd.DataFrame()
    assigned = arbitrate(pairs, settings.max_offers_per_customer, campaign_capacity, channel_capacity)
    write_assignments(business_date, assigned, ref, settings)
    result = ScoringResult(
        business_date.isoformat(),
        ref.name,
        ref.version,
        len(pairs),
        int(assigned["customer_id"].nunique()) if len(assigned) else 0,
        len(assigned),
    )
    with mlflow.start_run(run_name=f"score-{business_date}"):
        mlflow.log_params({"business_date": business_date.isoformat(), "model_version": ref.version})
        mlflow.log_metrics(
            {
                "pairs_scored": result.pairs_scored,
                "assignments": result.assignments,
                "customers_assigned": result.customers_assigned,
                "propensity_mean": float(pairs["propensity"].mean()) if len(pairs) else 0.0,
            }
        )
    log.info("scored and assigned: %s", json.dumps(asdict(result)))
    return result


def create_assignments_table(con) -> None:
    """``marts.customer_campaign_assignments`` when it does not exist yet (dbt reads it as a source)."""
    con.execute("create schema if not exists marts")
    con.execute(
        f"""
        create table if not exists {ASSIGNMENTS_TABLE} (
            business_date date not null, customer_id bigint not null, rank integer not null,
            campaign_id varchar not null, offer_id varchar not null, channel varchar not null,
            propensity double not null, priority double not null, valid_until date not null,
            model_name varchar not null, model_version varchar not null, reasons varchar not null,
            primary key (business_date, customer_id, rank)
        )
        """
    )


def write_assignments(business_date: dt.date, assigned: pd.DataFrame, ref: ModelRef, settings: Settings) -> None:
    """Replace the business date's rows of ``marts.customer_campaign_assignments`` in one transaction."""

    frame = pd.DataFrame(
        {
            "business_date": pd.Series([business_date] * len(assigned), dtype="object"),
            "customer_id": assigned["customer_id"].astype("int64"),
            "rank": assigned["rank"].astype("int64"),
            "campaign_id": assigned["campaign_id"].astype(str),
            "offer_id": assigned["offer_id"].astype(str),
            "channel": assigned["channel"].astype(str),
            "propensity": assigned["propensity"].astype("float64"),
            "priority": np.round(assigned["priority"].astype("float64"), 4),
            "valid_until": assigned["valid_until"],
            "model_name": ref.name,
            "model_version": ref.version,
            "reasons": assigned["reasons"].astype(str),
        }
    )
    with connect(settings) as con:
        create_assignments_table(con)
        con.execute("begin transaction")
        try:
            con.execute(
                f"delete from {ASSIGNMENTS_TABLE} where business_date = ?",
                [business_date],
            )
            con.register("frame", frame)
            con.execute(f"insert into {ASSIGNMENTS_TABLE} by name select * from frame")
            con.execute("commit")
        except Exception:
            con.execute("rollback")
            raise
