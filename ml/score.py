"""Daily scoring and assignment: champion model -> propensities -> arbitration -> warehouse."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from crm.settings import Settings
from crm.warehouse import Session, metadata, warehouse
from ml.arbitrate import load_policy
from ml.arms import EXPLORATION, EXPLORATION_REASON, MODEL, Shares, assign
from ml.features import FEATURES, REASON_TEXT, scoring_batches
from ml.registry import CHAMPION, ModelRef, champion, mlflow_client, model_inputs
from models.core_banking import CHANNELS

log = logging.getLogger(__name__)

# the day's assignment, back in the warehouse (dbt reads it as a source; the publish reads it)
ASSIGNMENTS = sa.Table(
    "customer_campaign_assignments", metadata,
    sa.Column("business_date", sa.Date(), primary_key=True),
    sa.Column("customer_id", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("rank", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("campaign_id", sa.Unicode(64), nullable=False), sa.Column("offer_id", sa.Unicode(64), nullable=False),
    sa.Column("channel", sa.Unicode(32), nullable=False), sa.Column("propensity", sa.Double(), nullable=False),
    sa.Column("priority", sa.Double(), nullable=False), sa.Column("valid_until", sa.Date(), nullable=False),
    sa.Column("model_name", sa.Unicode(200), nullable=False), sa.Column("model_version", sa.Unicode(64), nullable=False),
    sa.Column("reasons", sa.UnicodeText(), nullable=False),
    # the experiment (ml.arms): which arm chose the offer, and with what probability within it
    sa.Column("arm", sa.Unicode(16)), sa.Column("selection_probability", sa.Double()),
    schema="marts",
)  # fmt: skip
# what the rows an older release wrote were: the model's picks
_BEFORE_ARMS = {"arm": MODEL, "selection_probability": 1.0}


class NothingToAssign(RuntimeError):
    """The assignment gate: the business date has no eligible pair, or arbitration assigned no
    offer. The run stops here, before anything is published; the message gives the counts and the
    campaigns' state."""


def campaigns_state(session: Session, business_date: dt.date) -> str:
    """The campaigns on ``business_date``, for a person: which are live, and why each live one
    reached no one (the outcomes in marts.campaign_exclusions)."""
    live = [r[0] for r in session.rows(
        "select campaign_id from staging.stg_campaigns__campaigns where start_date <= :d and end_date >= :d "
        "order by campaign_id", {"d": business_date})]  # fmt: skip
    if not live:
        ended = session.scalar("select max(end_date) from staging.stg_campaigns__campaigns")
        return f"no campaign is live on {business_date} (the last one ended {ended})"
    outcomes = session.rows(
        "select outcome, sum(customers) from marts.campaign_exclusions where as_of_date = :d "
        "group by outcome order by 2 desc, 1",
        {"d": business_date},
    )
    seen = ", ".join(f"{outcome}={int(n)}" for outcome, n in outcomes) or "no customer evaluated (no features?)"
    return f"{len(live)} campaigns live ({', '.join(live)}); customers x campaigns by outcome: {seen}"


def assignment_gate(session: Session, business_date: dt.date, pairs: int, assigned: int | None = None) -> None:
    """Stop the run, naming the gate, the counts and the campaigns' state, when ``business_date``
    has no eligible pair (``assigned`` None: before scoring) or arbitration assigned no offer."""
    if pairs == 0:
        raise NothingToAssign(
            f"assignment gate for {business_date}: 0 eligible customer x campaign pairs in "
            f"marts.campaign_eligibility, nothing to score or publish; {campaigns_state(session, business_date)}"
        )
    if assigned == 0:
        raise NothingToAssign(
            f"assignment gate for {business_date}: {pairs} eligible pairs scored but arbitration assigned no "
            f"offer (capacities, consents and 30-day frequency caps left none); {campaigns_state(session, business_date)}"
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


def scoring_champion(settings: Settings) -> ModelRef | None:
    """The champion model to score with; None when the registry has none (locally: crm_daily's
    ``ensure_model`` then trains a first one). In production a missing champion stops the task."""
    ref = champion(settings)
    if ref is None and settings.production:
        raise RuntimeError(
            f"no {settings.model.model_name} model with alias {CHAMPION} in the registry "
            f"{settings.mlflow_tracking_uri}: run crm_model_training (or move the alias to a version); "
            "production never scores with a model trained on the spot"
        )
    return ref


def _check_signature(model_uri: str, columns: list[str]) -> list[str]:
    """The columns the model reads. Fail with their names when today's features lack some of them; a
    model that does not read some of today's features (trained before a release added them) scores
    on those it reads, and the log says which it leaves out and how to use them."""
    expected = model_inputs(model_uri)
    missing = sorted(set(expected) - set(columns))
    if missing:
        raise FeatureMismatch(
            f"the features do not match the signature of {model_uri}: today's features lack {missing}; "
            "run crm_model_training (a version that reads today's features takes over from a champion that "
            "cannot), or move the champion alias to such a version"
        )
    unread = sorted(set(FEATURES) - set(expected))
    if unread:
        log.warning("%s does not read today's features %s (trained before they were added): it scores on "
                    "those it reads; crm_model_training trains a version that reads them, champion when it captures more",
                    model_uri, unread)  # fmt: skip
    return expected


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


def _features_table(*columns: str) -> sa.TableClause:
    return sa.table("customer_features", *(sa.column(c) for c in [*columns, "customer_id", "as_of_date"]),
                    schema="marts")  # fmt: skip


def _reference(session: Session, business_date: dt.date) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each reason feature over the day's customers."""
    f = _features_table(*REASON_TEXT)
    columns = [fn(sa.cast(f.c[c], sa.Double())) for c in REASON_TEXT for fn in (sa.func.avg, sa.func.stddev_pop)]
    row = session.rows(sa.select(*columns).where(f.c.as_of_date == business_date))[0]
    return {c: (float(row[2 * i] or 0), float(row[2 * i + 1] or 0)) for i, c in enumerate(REASON_TEXT)}


# what arbitration needs of each scored pair (kept narrow: every eligible pair of the day is held)
_CONSENTS = [f"consent_{c.lower()}" for c in CHANNELS]
_CONTACTS = [f"contacts_30d_{c.lower()}" for c in CHANNELS]


def score_pairs(model, batches, coder: ReasonCoder, model_uri: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Score every pair of ``batches`` (chunks, in any order): a narrow frame of what arbitration
    needs, and each campaign's offer, value, weight and validity."""
    parts, offers = [], {}
    reads = None if model_uri is not None else FEATURES
    for batch in batches:
        if reads is None:
            reads = _check_signature(model_uri, list(batch.columns))
        for row in batch.drop_duplicates("campaign_id").itertuples():
            offers.setdefault(row.campaign_id, (row.offer_id, row.valid_until, row.value_pen, row.priority_weight))
        campaign = pd.Categorical(batch["campaign_id"], categories=coder.campaigns)
        if (campaign.codes < 0).any():
            raise ValueError(f"campaigns without a policy: {sorted(set(batch['campaign_id']) - set(coder.campaigns))}")
        propensity = model.predict_proba(batch[reads])[:, 1]
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


def _reason_texts(session: Session, business_date: dt.date, assigned: pd.DataFrame, coder: ReasonCoder) -> list[str]:
    """The reasons of the assigned pairs: the features that pushed the score, then the channel rule."""
    f = _features_table(*coder.features)
    columns = [sa.cast(f.c[c], sa.Double()).label(c) for c in coder.features]
    features = session.frame(sa.select(f.c.customer_id, *columns).where(f.c.as_of_date == business_date))
    features = features.set_index("customer_id").loc[assigned["customer_id"].to_numpy()]
    codes = pd.Categorical(assigned["campaign_id"], categories=coder.campaigns).codes
    texts = coder.reasons(features, codes)
    # an exploration offer was drawn at random: the features did not choose it, so they are not its reasons
    exploring = (assigned["arm"] == EXPLORATION).to_numpy()
    texts = [[EXPLORATION_REASON] if e else t for t, e in zip(texts, exploring, strict=True)]
    return [json.dumps([*t, ch]) for t, ch in zip(texts, assigned["channel_reason"], strict=True)]


def score_and_assign(business_date: dt.date, settings: Settings) -> ScoringResult:
    """Score every eligible pair of ``business_date`` with the champion, arbitrate, write the result."""
    import mlflow

    wh = warehouse(settings)
    with wh.connect() as session:
        eligible = session.scalar(
            "select count(*) from marts.campaign_eligibility where as_of_date = :d", {"d": business_date}
        )
        assignment_gate(session, business_date, eligible)
    ref = scoring_champion(settings)
    if ref is None:
        raise RuntimeError(
            f"no {settings.model.model_name} model with alias {CHAMPION} in the registry {settings.mlflow_tracking_uri}: "
            "crm_daily's ensure_model trains a first one before scoring"
        )
    mlflow_client(settings)
    model_uri = f"models:/{ref.name}@{CHAMPION}"
    model = mlflow.sklearn.load_model(model_uri)
    with wh.connect() as session:
        policy = load_policy(session, settings.model.max_offers_per_customer)
        coder = ReasonCoder(_reference(session, business_date), sorted(policy.campaign_capacity))
        # closed when scoring stops early: an open result would fail the rollback and hide why it stopped
        with contextlib.closing(scoring_batches(session, business_date)) as batches:
            pairs, offers = score_pairs(model, batches, coder, model_uri)
        shares = Shares.of(settings)
        assigned = assign(pairs, policy, business_date, shares)
        assignment_gate(session, business_date, len(pairs), len(assigned))
        assigned["campaign_id"] = assigned["campaign_id"].astype(str)
        assigned["offer_id"] = assigned["campaign_id"].map(lambda c: offers[c][0])
        assigned["valid_until"] = assigned["campaign_id"].map(lambda c: offers[c][1])
        assigned["reasons"] = _reason_texts(session, business_date, assigned, coder)
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
            **(
                {f"assigned_arm.{a}": int(n) for a, n in assigned.groupby("arm").size().items()}
                if len(assigned)
                else {}
            ),
        }
        mlflow.log_metrics(metrics)
        out = Path(tmp)
        coverage.to_csv(out / "coverage_by_campaign.csv", index_label="campaign_id")
        by_channel.rename("assigned").to_csv(out / "assigned_by_channel.csv", index_label="channel")
        (out / "score_distribution.json").write_text(
            json.dumps({"bin_edges": edges.round(3).tolist(), "pairs": histogram.tolist()})
        )
        mlflow.log_artifacts(str(out), artifact_path="scoring")


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
            "arm": assigned["arm"].astype(str),
            "selection_probability": np.round(assigned["selection_probability"].astype("float64"), 6),
        }
    )
    warehouse(settings).replace_date(ASSIGNMENTS, "business_date", business_date, frame, fill=_BEFORE_ARMS)
