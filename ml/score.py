"""Daily scoring and assignment: champion model -> propensities -> arbitration -> warehouse."""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crm.settings import Settings, get_settings
from crm.warehouse import connect
from ml.arbitrate import arbitrate, load_policy
from ml.features import FEATURES, REASON_TEXT, scoring_batches
from ml.registry import CHAMPION, ModelRef, champion, mlflow_client
from ml.train import train_and_register
from models.core_banking import CHANNELS

log = logging.getLogger(__name__)

ASSIGNMENTS_TABLE = "marts.customer_campaign_assignments"


class NothingToAssign(RuntimeError):
    """The assignment gate: the business date has no eligible pair, or arbitration assigned no
    offer. The run stops here, before anything is published; the message gives the counts and the
    campaigns' state."""


def campaigns_state(con, business_date: dt.date) -> str:
    """The campaigns on ``business_date``, for a person: which are live, and why each live one
    reached no one (the outcomes in marts.campaign_exclusions)."""
    live = [r[0] for r in con.execute(
        "select campaign_id from staging.stg_campaigns__campaigns where start_date <= ? and end_date >= ? "
        "order by campaign_id", [business_date, business_date]).fetchall()]  # fmt: skip
    if not live:
        ended = con.execute("select max(end_date) from staging.stg_campaigns__campaigns").fetchone()[0]
        return f"no campaign is live on {business_date} (the last one ended {ended})"
    outcomes = con.execute(
        "select outcome, sum(customers) from marts.campaign_exclusions where as_of_date = ? "
        "group by outcome order by 2 desc, 1",
        [business_date],
    ).fetchall()
    seen = ", ".join(f"{outcome}={int(n)}" for outcome, n in outcomes) or "no customer evaluated (no features?)"
    return f"{len(live)} campaigns live ({', '.join(live)}); customers x campaigns by outcome: {seen}"


def assignment_gate(con, business_date: dt.date, pairs: int, assigned: int | None = None) -> None:
    """Stop the run, naming the gate, the counts and the campaigns' state, when ``business_date``
    has no eligible pair (``assigned`` None: before scoring) or arbitration assigned no offer."""
    if pairs == 0:
        raise NothingToAssign(
            f"assignment gate for {business_date}: 0 eligible customer x campaign pairs in "
            f"marts.campaign_eligibility, nothing to score or publish; {campaigns_state(con, business_date)}"
        )
    if assigned == 0:
        raise NothingToAssign(
            f"assignment gate for {business_date}: {pairs} eligible pairs scored but arbitration assigned no "
            f"offer (capacities, consents and 30-day frequency caps left none); {campaigns_state(con, business_date)}"
        )


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
    """The champion model; trains and registers one first when the registry has none (locally only:
    in production a missing champion stops the task)."""
    settings = settings or get_settings()
    ref = champion(settings)
    if ref is None and settings.production:
        raise RuntimeError(
            f"no {settings.model_name} model with alias {CHAMPION} in the registry "
            f"{settings.mlflow_tracking_uri}: run crm_model_training (or move the alias to a version); "
            "production never scores with a model trained on the spot"
        )
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


class ReasonCoder:
    """The features that pushed a pair's score, as readable reasons.

    Model-agnostic: a feature pushes the score of a pair when the customer is far from the day's
    average on it (``z``, in standard deviations) in the direction in which, for that campaign,
    the feature moves the model's propensity: the correlation of the two over every pair of the
    day, gathered chunk by chunk (:meth:`add`). The two largest pushes above a threshold are the
    reasons; only assigned pairs need them (:meth:`reasons`)."""

    def __init__(self, reference: dict[str, tuple[float, float]], campaigns: list[str]):
        self.features = list(REASON_TEXT)
        self.mean = np.array([reference[f][0] for f in self.features])
        self.std = np.array([max(reference[f][1], 1e-9) for f in self.features])
        self.campaigns = campaigns
        k, f = len(campaigns), len(self.features)
        self._n, self._p, self._pp = np.zeros(k), np.zeros(k), np.zeros(k)
        self._z, self._zz, self._zp = np.zeros((k, f)), np.zeros((k, f)), np.zeros((k, f))
        # a direction without a text is never a reason
        self.usable = np.array([[REASON_TEXT[f][0] is not None, REASON_TEXT[f][1] is not None] for f in self.features])

    def z(self, frame: pd.DataFrame) -> np.ndarray:
        return (frame[self.features].to_numpy(dtype=np.float64) - self.mean) / self.std

    def add(self, frame: pd.DataFrame, propensity: np.ndarray, campaign_code: np.ndarray) -> None:
        """Gather the sums the correlations need from one chunk of scored pairs."""
        z, k = self.z(frame), len(self.campaigns)
        self._n += np.bincount(campaign_code, minlength=k)
        self._p += np.bincount(campaign_code, weights=propensity, minlength=k)
        self._pp += np.bincount(campaign_code, weights=propensity**2, minlength=k)
        for j in range(len(self.features)):
            self._z[:, j] += np.bincount(campaign_code, weights=z[:, j], minlength=k)
            self._zz[:, j] += np.bincount(campaign_code, weights=z[:, j] ** 2, minlength=k)
            self._zp[:, j] += np.bincount(campaign_code, weights=z[:, j] * propensity, minlength=k)

    def weights(self) -> np.ndarray:
        """campaign x feature: the correlation of the feature with the propensity (0 when undefined)."""
        n = np.maximum(self._n, 1)[:, None]
        mz, mp = self._z / n, (self._p / n[:, 0])[:, None]
        cov = self._zp / n - mz * mp
        sd_z = np.sqrt(np.maximum(self._zz / n - mz**2, 0))
        sd_p = np.sqrt(np.maximum(self._pp / n[:, 0] - mp[:, 0] ** 2, 0))[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = np.where((sd_z > 0) & (sd_p > 0) & (n >= 50), cov / (sd_z * sd_p), 0.0)
        return np.round(corr, 6)  # the sums' rounding must not change a reason

    def reasons(self, frame: pd.DataFrame, campaign_code: np.ndarray) -> list[list[str]]:
        z = self.z(frame)
        push = z * self.weights()[campaign_code]
        direction_ok = np.where(z >= 0, self.usable[:, 0], self.usable[:, 1])
        push = np.where(direction_ok & (np.abs(z) >= 0.5), push, 0.0)
        top = np.argsort(-push, axis=1, kind="stable")[:, :2]
        out = []
        for i, row in enumerate(top):
            texts = [REASON_TEXT[self.features[j]][0 if z[i, j] >= 0 else 1] for j in row if push[i, j] > 0.1]
            out.append(texts)
        return out


def _reference(con, business_date: dt.date) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each reason feature over the day's customers."""
    cols = list(REASON_TEXT)
    row = con.sql(
        f"select {', '.join(f'avg({c}), stddev_pop({c})' for c in cols)} "
        "from marts.customer_features where as_of_date = ?",
        params=[business_date],
    ).fetchall()[0]
    return {c: (float(row[2 * i] or 0), float(row[2 * i + 1] or 0)) for i, c in enumerate(cols)}


# what arbitration needs of each scored pair (kept narrow: every eligible pair of the day is held)
_CONSENTS = [f"consent_{c.lower()}" for c in CHANNELS]
_CONTACTS = [f"contacts_30d_{c.lower()}" for c in CHANNELS]


def score_pairs(model, batches, coder: ReasonCoder, model_uri: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Score every pair of ``batches`` (chunks, in any order): a narrow frame of what arbitration
    needs, and each campaign's offer, value, weight and validity."""
    parts, offers = [], {}
    checked = model_uri is None
    for batch in batches:
        if not checked:
            _check_signature(model_uri, list(batch.columns))
            checked = True
        for row in batch.drop_duplicates("campaign_id").itertuples():
            offers.setdefault(row.campaign_id, (row.offer_id, row.valid_until, row.value_pen, row.priority_weight))
        campaign = pd.Categorical(batch["campaign_id"], categories=coder.campaigns)
        if (campaign.codes < 0).any():
            raise ValueError(f"campaigns without a policy: {sorted(set(batch['campaign_id']) - set(coder.campaigns))}")
        propensity = model.predict_proba(batch[FEATURES])[:, 1]
        coder.add(batch, propensity, campaign.codes)
        out = pd.DataFrame({"customer_id": batch["customer_id"].to_numpy(dtype=np.int64), "campaign_id": campaign,
                            "propensity": np.round(propensity, 6)})  # fmt: skip
        for col in _CONSENTS + _CONTACTS:
            out[col] = batch[col].to_numpy().astype(np.int16)
        parts.append(out)
    if not parts:
        return pd.DataFrame(columns=["customer_id", "campaign_id", "propensity", "value_pen", "priority_weight"]), {}
    pairs = pd.concat(parts, ignore_index=True)
    values = pd.Series({c: o[2] for c, o in offers.items()}, dtype="float64")
    weights = pd.Series({c: o[3] for c, o in offers.items()}, dtype="float64")
    pairs["value_pen"] = pairs["campaign_id"].map(values).astype("float64")
    pairs["priority_weight"] = pairs["campaign_id"].map(weights).astype("float64")
    return pairs, offers


def _reason_texts(con, business_date: dt.date, assigned: pd.DataFrame, coder: ReasonCoder) -> list[str]:
    """The reasons of the assigned pairs: the features that pushed the score, then the channel rule."""
    ids = pd.DataFrame({"customer_id": assigned["customer_id"].unique()})  # noqa: F841 - read below
    features = (
        con.sql(
            f"select f.customer_id, {', '.join(f'cast(f.{c} as double) as {c}' for c in coder.features)} "
            "from marts.customer_features as f join ids on ids.customer_id = f.customer_id where f.as_of_date = ?",
            params=[business_date],
        )
        .df()
        .set_index("customer_id")
        .loc[assigned["customer_id"].to_numpy()]
    )
    codes = pd.Categorical(assigned["campaign_id"], categories=coder.campaigns).codes
    texts = coder.reasons(features, codes)
    return [json.dumps([*t, ch]) for t, ch in zip(texts, assigned["channel_reason"], strict=True)]


def score_and_assign(business_date: dt.date, settings: Settings | None = None) -> ScoringResult:
    """Score every eligible pair of ``business_date`` with the champion, arbitrate, write the result."""
    import mlflow

    settings = settings or get_settings()
    with connect(settings) as con:
        eligible = con.execute(
            "select count(*) from marts.campaign_eligibility where as_of_date = ?", [business_date]
        ).fetchone()[0]
        assignment_gate(con, business_date, eligible)
    ref = ensure_champion(business_date, settings)
    mlflow_client(settings)
    model_uri = f"models:/{ref.name}@{CHAMPION}"
    model = mlflow.sklearn.load_model(model_uri)
    with connect(settings) as con:
        policy = load_policy(con, settings.max_offers_per_customer)
        coder = ReasonCoder(_reference(con, business_date), sorted(policy.campaign_capacity))
        pairs, offers = score_pairs(model, scoring_batches(con, business_date), coder, model_uri)
        assigned = arbitrate(pairs, policy)
        assignment_gate(con, business_date, len(pairs), len(assigned))
        assigned["campaign_id"] = assigned["campaign_id"].astype(str)
        assigned["offer_id"] = assigned["campaign_id"].map(lambda c: offers[c][0])
        assigned["valid_until"] = assigned["campaign_id"].map(lambda c: offers[c][1])
        assigned["reasons"] = _reason_texts(con, business_date, assigned, coder)
    write_assignments(business_date, assigned, ref, settings)
    result = ScoringResult(
        business_date.isoformat(),
        ref.name,
        ref.version,
        len(pairs),
        int(assigned["customer_id"].nunique()) if len(assigned) else 0,
        len(assigned),
    )
    log_scoring_run(business_date, ref, pairs, assigned)
    log.info("scored and assigned: %s", json.dumps(asdict(result)))
    return result


def log_scoring_run(business_date: dt.date, ref: ModelRef, pairs: pd.DataFrame, assigned: pd.DataFrame) -> None:
    """The day's scoring in MLflow: counts, the score distribution, coverage by campaign and channel."""
    import mlflow

    p = pairs["propensity"].to_numpy() if len(pairs) else np.zeros(1)
    eligible = pairs.groupby("campaign_id", observed=True).size() if len(pairs) else pd.Series(dtype=int)
    by_campaign = assigned.groupby("campaign_id").size() if len(assigned) else pd.Series(dtype=int)
    by_channel = assigned.groupby("channel").size() if len(assigned) else pd.Series(dtype=int)
    coverage = pd.DataFrame({"eligible_pairs": eligible, "assigned": by_campaign}).fillna(0).astype(int)
    coverage["coverage"] = (coverage["assigned"] / coverage["eligible_pairs"].clip(lower=1)).round(4)
    histogram, edges = np.histogram(p, bins=20, range=(0.0, 1.0))
    with mlflow.start_run(run_name=f"score-{business_date}"), tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags({"run_type": "scoring", "model_version": ref.version})
        mlflow.log_params({"business_date": business_date.isoformat(), "model_name": ref.name,
                           "model_version": ref.version})  # fmt: skip
        metrics = {
            "pairs_scored": len(pairs),
            "customers_scored": int(pairs["customer_id"].nunique()) if len(pairs) else 0,
            "assignments": len(assigned),
            "customers_assigned": int(assigned["customer_id"].nunique()) if len(assigned) else 0,
            "propensity_mean": float(p.mean()),
            **{f"propensity_p{q}": float(np.quantile(p, q / 100)) for q in (10, 50, 90, 99)},
            **{f"assigned.{c}": int(n) for c, n in by_campaign.items()},
            **{f"coverage.{c}": float(v) for c, v in coverage["coverage"].items()},
            **{f"assigned_channel.{c}": int(n) for c, n in by_channel.items()},
        }
        mlflow.log_metrics(metrics)
        out = Path(tmp)
        coverage.to_csv(out / "coverage_by_campaign.csv", index_label="campaign_id")
        by_channel.rename("assigned").to_csv(out / "assigned_by_channel.csv", index_label="channel")
        (out / "score_distribution.json").write_text(
            json.dumps({"bin_edges": edges.round(3).tolist(), "pairs": histogram.tolist()})
        )
        mlflow.log_artifacts(str(out), artifact_path="scoring")


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
