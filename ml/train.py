"""Train the campaign-propensity candidates, log them to MLflow, register the best, promote it or not.

One model for every campaign (the campaign is a feature). The training set is point in time
(:mod:`ml.training_set`) and every split is by contact date, never at random: the oldest contacts
fit the estimator, the next ones calibrate its probabilities, the latest 20% are the holdout every
candidate and the current champion are measured on.

Promotion (:mod:`ml.gate`): the candidate that captures most at the campaigns' capacities on the
holdout is registered as a new version of ``crm-campaign-propensity``. It takes the alias
``champion`` only when its ``capture_at_capacity`` beats the champion's on the same holdout by
``promotion_margin`` and its calibration error is no worse than the champion's by more than
``CALIBRATION_TOLERANCE``; otherwise it takes ``challenger``: a version that loses capture is never
promoted. The decision and its reason go to the MLflow run (tags ``promotion.*``, both measures of
both models), to the model version's tags and to the task log.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crm.settings import Settings
from crm.warehouse import warehouse
from ml.features import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES
from ml.gate import Capacity, campaign_capacities, capture_metrics
from ml.registry import CHALLENGER, CHAMPION, mlflow_client
from ml.training_set import TrainingWindow, feature_dates_missing, training_frame

log = logging.getLogger(__name__)

CANDIDATES = ("logistic_regression", "gradient_boosting", "per_campaign_logistic")
PROMOTION_METRIC = "capture_at_capacity"
CALIBRATION_TOLERANCE = 0.01  # calibration error a new champion may add to the champion's
DEFAULT_MARGIN = 0.005
MIN_CONTACTS = 200
MIN_ACCEPTANCES = 20


class TrainingError(RuntimeError):
    pass


@dataclass(frozen=True)
class TrainingConfig:
    """What ``crm_model_training`` takes as parameters."""

    window_days: int = 84
    feature_step_days: int = 7
    candidates: tuple[str, ...] = CANDIDATES
    promotion_margin: float = DEFAULT_MARGIN

    def __post_init__(self) -> None:
        unknown = sorted(set(self.candidates) - set(CANDIDATES))
        if unknown or not self.candidates:
            raise ValueError(f"unknown candidates {unknown or '(none given)'}; choose from {list(CANDIDATES)}")
        if not 0 <= self.promotion_margin < 1:
            raise ValueError(f"promotion_margin must be in [0, 1) (got {self.promotion_margin})")


@dataclass(frozen=True)
class TrainingResult:
    business_date: str
    model_name: str
    version: str
    candidate: str
    alias: str  # champion or challenger
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    champion_before: str | None = None
    training_rows: int = 0
    holdout_rows: int = 0
    backfilled_feature_dates: int = 0


def estimator(name: str):
    """An unfitted candidate: the feature encoding and the classifier, in one pipeline."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    if name == "logistic_regression":
        pre = ColumnTransformer(
            [("categorical", onehot, CATEGORICAL_FEATURES), ("numeric", StandardScaler(), NUMERIC_FEATURES)],
            verbose_feature_names_out=False,
        )
        model = LogisticRegression(C=0.5, max_iter=2000)
    elif name == "gradient_boosting":
        pre = ColumnTransformer(
            [("categorical", onehot, CATEGORICAL_FEATURES)], remainder="passthrough", verbose_feature_names_out=False
        )
        model = HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=40,
            l2_regularization=1.0, early_stopping=False, random_state=0,
        )  # fmt: skip
    elif name == "per_campaign_logistic":  # its own features and one model per campaign (ml.estimators)
        from ml.estimators import PerCampaign, logistic

        return PerCampaign(logistic())
    else:
        raise ValueError(f"unknown candidate {name!r}; choose from {list(CANDIDATES)}")
    return Pipeline([("features", pre), ("model", model)])


def time_split(df: pd.DataFrame, share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows before and from the contact date that leaves ``share`` of the rows last."""
    cut = df["contact_date"].quantile(1 - share, interpolation="higher")
    return df[df["contact_date"] < cut], df[df["contact_date"] >= cut]


def fit_calibrated(name: str, train: pd.DataFrame):
    """Fit ``name`` on the older 75% of ``train`` and calibrate its probabilities on the rest.

    The calibration is a sigmoid (Platt), whatever the bank's size: strictly increasing, it keeps the
    estimator's ranking. Isotonic regression is a step function whose top step ties every pair above
    its last threshold, and the arbitration's capacities pick from exactly there (the top 0.1-1% of
    each campaign's eligible pairs): on ``make bench-scoring``'s bank it cost 2.5 points of the
    oracle's expected value (issue 24)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    fit, calibration = time_split(train, 0.25)
    if fit["accepted"].nunique() < 2 or calibration["accepted"].nunique() < 2:
        raise TrainingError("the fit or the calibration slice has a single outcome: widen training_window_days")
    model = estimator(name).fit(fit[FEATURES], fit["accepted"])
    method = "sigmoid"
    calibrated = CalibratedClassifierCV(FrozenEstimator(model), method=method)
    return calibrated.fit(calibration[FEATURES], calibration["accepted"]), method


def chosen_at_random(contacts: pd.DataFrame) -> np.ndarray:
    """The contacts nobody's model chose: the bank's own random campaigns' and the exploration arm's.
    The model arm's contacts are the champion's top picks; measured on them, every model would be
    judged where the champion already looked (the gate's capture reads these only)."""
    return (contacts["arm"].isna() | (contacts["arm"] == "exploration")).to_numpy()


def holdout_metrics(
    y: np.ndarray,
    p: np.ndarray,
    campaigns: pd.Series,
    capacities: dict[str, Capacity],
    random: np.ndarray | None = None,
) -> dict[str, float]:
    """What the gate compares (:func:`ml.gate.capture_metrics`, on the contacts chosen at random:
    ``random``, all when None) and the usual ranking measures."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    random = np.ones(len(y), dtype=bool) if random is None else random

    order = np.argsort(-p, kind="stable")
    top = order[: max(1, len(p) // 10)]
    out = {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "lift_top_decile": float(y[top].mean() / max(y.mean(), 1e-9)),
        **capture_metrics(y[random], p[random], campaigns[random], capacities),
        "gate_contacts": float(random.sum()),
    }
    for campaign, idx in campaigns.groupby(campaigns.to_numpy()).indices.items():
        if len(np.unique(y[idx])) == 2:
            out[f"auc.{campaign}"] = float(roc_auc_score(y[idx], p[idx]))
    return out


def _calibration_plot(y: np.ndarray, p: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    true, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, max(predicted.max(), true.max())], [0, max(predicted.max(), true.max())], ":", color="grey")
    ax.plot(predicted, true, "o-")
    ax.set(xlabel="predicted propensity (deciles)", ylabel="acceptance rate in the holdout", title=title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _feature_importance(model, holdout: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Permutation importance on (a sample of) the holdout: the ROC AUC lost when a feature is shuffled."""
    from sklearn.inspection import permutation_importance

    sample = holdout.sample(min(len(holdout), 20_000), random_state=0) if len(holdout) > 20_000 else holdout
    result = permutation_importance(
        model, sample[FEATURES], sample["accepted"], scoring="roc_auc", n_repeats=3, random_state=0
    )
    table = pd.DataFrame(
        {"feature": FEATURES, "auc_drop_mean": result.importances_mean, "auc_drop_std": result.importances_std}
    ).sort_values("auc_drop_mean", ascending=False)
    table.to_csv(path, index=False)
    return table


def _data_profile(df: pd.DataFrame, train: pd.DataFrame, holdout: pd.DataFrame, out: Path) -> dict:
    """What the model learned from: rows, dates, acceptance by campaign, and every feature's spread."""
    profile = {
        "rows": len(df),
        "contacts_from": str(df["contact_date"].min().date()),
        "contacts_to": str(df["contact_date"].max().date()),
        "training_rows": len(train),
        "holdout_rows": len(holdout),
        "holdout_from": str(holdout["contact_date"].min().date()),
        "acceptance_rate": float(df["accepted"].mean()),
        "feature_age_days_max": int((df["contact_date"] - df["feature_date"]).dt.days.max()),
        "by_campaign": df.groupby("campaign_id")["accepted"].agg(["count", "mean"]).round(4).to_dict("index"),
        "distinct_values": {col: int(df[col].nunique()) for col in CATEGORICAL_FEATURES},
    }
    (out / "training_profile.json").write_text(json.dumps(profile, indent=2, default=str))
    df[NUMERIC_FEATURES].describe().T.round(3).to_csv(out / "training_features_summary.csv")
    return profile


def _trusted_types(model) -> list[str]:
    """The classes of our own freshly trained model, which skops asks us to trust when loading it."""
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(model))


def _champion_on(
    holdout: pd.DataFrame, client, model_name: str, capacities: dict[str, Capacity]
) -> tuple[str | None, dict[str, float] | None, str]:
    """The current champion's version and measures on this holdout (None when there is none or it
    cannot read today's features), with why."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        version = str(client.get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None, None, "there is no champion yet"
    uri = f"models:/{model_name}/{version}"
    names = mlflow.models.get_model_info(uri).signature.inputs.input_names()
    missing = sorted(set(names) - set(holdout.columns))
    if missing:
        return version, None, f"champion v{version} cannot score today's features (missing {missing})"
    p = mlflow.sklearn.load_model(uri).predict_proba(holdout[names])[:, 1]
    y, campaigns = holdout["accepted"].to_numpy(), holdout["campaign_id"]
    return version, holdout_metrics(y, p, campaigns, capacities, chosen_at_random(holdout)), ""


def promotion(
    version: str, best: str, metrics: dict[str, float], champion: tuple[str | None, dict | None, str], margin: float
) -> tuple[str, str]:
    """The alias the new version takes, and why: champion only when it captures more at capacity
    than the champion by ``margin`` and is calibrated about as well."""
    champion_version, theirs, why = champion
    score, error = metrics[PROMOTION_METRIC], metrics["calibration_error"]
    mine = f"capture at capacity {score:.4f}, calibration error {error:.4f}"
    if theirs is None:
        return CHAMPION, f"{why}: v{version} ({best}, {mine}) becomes champion"
    versus = (f"capture at capacity {score:.4f} vs {theirs[PROMOTION_METRIC]:.4f}, calibration error "
              f"{error:.4f} vs {theirs['calibration_error']:.4f}")  # fmt: skip
    if score < theirs[PROMOTION_METRIC] + margin:
        return CHALLENGER, (f"v{version} ({best}) does not beat champion v{champion_version} by the margin {margin} "
                            f"on the same holdout: {versus}; it is challenger")  # fmt: skip
    if error > theirs["calibration_error"] + CALIBRATION_TOLERANCE:
        return CHALLENGER, (f"v{version} ({best}) captures more than champion v{champion_version} but is worse "
                            f"calibrated by more than {CALIBRATION_TOLERANCE}: {versus}; it is challenger")  # fmt: skip
    return CHAMPION, (f"v{version} ({best}) beats champion v{champion_version} on the same holdout by at least "
                      f"the margin {margin}: {versus}")  # fmt: skip


def train_and_register(
    business_date: dt.date, settings: Settings, config: TrainingConfig | None = None
) -> TrainingResult:
    """Train every candidate on the window (its features built: see ``feature_dates_missing``),
    register the best, decide its alias."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn import __version__ as sklearn_version

    config = config or TrainingConfig()
    window = TrainingWindow(business_date, config.window_days, config.feature_step_days)
    with warehouse(settings).connect() as session:
        missing = feature_dates_missing(session, window)
    if missing:  # the contacts of those dates would be left out of the training set unsaid
        raise TrainingError(
            f"the feature store has no customer_features close enough before some contacts of the window: "
            f"as of {', '.join(map(str, missing))} missing; crm_model_training's backfill_features task "
            "builds them (crm_daily's ensure_model does, for a first model)"
        )
    with warehouse(settings).connect() as session:
        df = training_frame(session, window)
        try:
            capacity_date, capacities = campaign_capacities(session, business_date)
        except LookupError as exc:
            raise TrainingError(str(exc)) from None
    accepted = int(df["accepted"].sum()) if len(df) else 0
    if len(df) < MIN_CONTACTS or accepted < MIN_ACCEPTANCES or accepted == len(df):
        raise TrainingError(
            f"not enough past campaign contacts to train on for {business_date}: {len(df)} contacts with a "
            f"final outcome since {window.first_contact}, {accepted} acceptances (need {MIN_CONTACTS} contacts "
            f"and {MIN_ACCEPTANCES} acceptances); widen training_window_days"
        )
    train, holdout = time_split(df, 0.2)
    y = holdout["accepted"].to_numpy()
    client = mlflow_client(settings)
    example = df[FEATURES].head(5)
    with mlflow.start_run(run_name=f"train-{business_date}") as parent, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        mlflow.log_params(
            {
                "business_date": business_date.isoformat(),
                "training_window_days": config.window_days,
                "feature_step_days": config.feature_step_days,
                "candidates": ",".join(config.candidates),
                "promotion_margin": config.promotion_margin,
                "promotion_metric": PROMOTION_METRIC,
                "calibration_tolerance": CALIBRATION_TOLERANCE,
                "capacities_as_of": capacity_date.isoformat(),
                "split": "by contact date: fit 60%, calibration 20%, holdout the latest 20%",
                "features": ",".join(FEATURES),
                "backfilled_feature_dates": len(missing),
            }
        )
        profile = _data_profile(df, train, holdout, out)
        mlflow.log_artifacts(str(out), artifact_path="data_profile")
        mlflow.log_metrics({"training_rows": len(train), "holdout_rows": len(holdout),
                            "acceptance_rate": profile["acceptance_rate"]})  # fmt: skip
        results: dict[str, tuple[dict, object]] = {}
        for name in config.candidates:
            with mlflow.start_run(run_name=name, nested=True) as child:
                model, method = fit_calibrated(name, train)
                p = model.predict_proba(holdout[FEATURES])[:, 1]
                metrics = holdout_metrics(y, p, holdout["campaign_id"], capacities, chosen_at_random(holdout))
                mlflow.log_params({"candidate": name, "calibration": method, **_estimator_params(model)})
                mlflow.log_metrics(metrics)
                cand = out / name
                cand.mkdir()
                _calibration_plot(y, p, cand / "calibration.png", f"{name}: holdout calibration")
                _feature_importance(model, holdout, cand / "feature_importance.csv")
                mlflow.log_artifacts(str(cand), artifact_path="evaluation")
                info = mlflow.sklearn.log_model(
                    model,
                    name="model",
                    signature=infer_signature(example, model.predict_proba(example)[:, 1]),
                    input_example=example,
                    pip_requirements=[f"scikit-learn=={sklearn_version}", "pandas", "numpy"],
                    skops_trusted_types=_trusted_types(model),
                )
                results[name] = (metrics, info)
                log.info("candidate %s (run %s): %s", name, child.info.run_id, _brief(metrics))
        best = max(results, key=lambda n: (results[n][0][PROMOTION_METRIC], results[n][0]["roc_auc"]))
        metrics, info = results[best]
        version = str(mlflow.register_model(info.model_uri, settings.model.model_name).version)
        champion = _champion_on(holdout, client, settings.model.model_name, capacities)
        champion_version, champion_metrics = champion[0], champion[1]
        alias, reason = promotion(version, best, metrics, champion, config.promotion_margin)
        client.set_registered_model_alias(settings.model.model_name, alias, version)
        for key, value in (("promotion.decision", alias), ("promotion.reason", reason), ("candidate", best)):
            client.set_model_version_tag(settings.model.model_name, version, key, value)
        mlflow.set_tags({"promotion.decision": alias, "promotion.reason": reason, "promotion.version": version,
                         "best_candidate": best})  # fmt: skip
        if champion_metrics is not None:
            mlflow.log_metrics({f"champion_holdout_{k}": champion_metrics[k]
                                for k in (PROMOTION_METRIC, "calibration_error", "roc_auc")})  # fmt: skip
        mlflow.log_metrics({f"best_{k}": v for k, v in metrics.items() if "." not in k})
        log.info("promotion of %s v%s (run %s): %s", settings.model.model_name, version, parent.info.run_id, reason)
    return TrainingResult(
        business_date=business_date.isoformat(),
        model_name=settings.model.model_name,
        version=version,
        candidate=best,
        alias=alias,
        reason=reason,
        metrics={k: round(v, 5) for k, v in metrics.items()},
        champion_before=champion_version,
        training_rows=len(train),
        holdout_rows=len(holdout),
        backfilled_feature_dates=len(missing),
    )


def _estimator_params(model) -> dict[str, object]:
    """The classifier's own hyper-parameters (those with a simple value), as MLflow parameters."""
    inner = model.estimator.estimator
    inner = (inner.base if hasattr(inner, "base") else inner).named_steps["model"]
    return {f"model.{k}": v for k, v in inner.get_params().items() if isinstance(v, int | float | str | bool)}


def _brief(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "." not in k)
