"""Train the campaign-propensity candidates, log them to MLflow, register the best, promote it or not.

One model for every campaign (the campaign is a feature). The training set is point in time
(:mod:`ml.training_set`) and every split is by contact date, never at random: the oldest 80% fit
each candidate (its probabilities calibrated on out-of-fold predictions), the latest 20% are the
holdout every candidate and the current champion are measured on.

The version registered serves the best candidate fitted again on the whole window: the latest
contacts are the ones most like tomorrow's customers, and a fifth more contacts is worth 0.3 points
of ``make bench-scoring``'s oracle capture (decision 0031). The gate never measures that refit: it
has seen the contacts a later training's holdout is drawn from and would be favoured over every
challenger. Each version keeps the fit that was measured (its tag ``measured_model``), and a later
training measures the champion by that one: fitted on contacts before its own holdout, which a
later holdout starts after.

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
from ml.registry import CHALLENGER, CHAMPION, mlflow_client, model_inputs
from ml.reports import calibration_plot, data_profile, feature_importance
from ml.training_set import TrainingWindow, feature_dates_missing, training_frame

log = logging.getLogger(__name__)

CANDIDATES = ("logistic_regression", "gradient_boosting", "per_campaign_logistic")
PROMOTION_METRIC = "capture_at_capacity"
CALIBRATION_TOLERANCE = 0.01  # calibration error a new champion may add to the champion's
DEFAULT_MARGIN = 0.005
# a version's tag: the URI of the fit on the window's oldest 80 %, which the gate measures
MEASURED_TAG = "measured_model"
MIN_CONTACTS = 200
MIN_ACCEPTANCES = 20
MAX_WEIGHT = 20.0  # a contact's weight at most: one unlikely draw must not outweigh twenty contacts


class TrainingError(RuntimeError):
    pass


@dataclass(frozen=True)
class TrainingConfig:
    """What ``crm_model_training`` takes as parameters."""

    window_days: int = 84
    feature_step_days: int = 7
    candidates: tuple[str, ...] = CANDIDATES
    promotion_margin: float = DEFAULT_MARGIN
    weight_contacts: bool = False  # each contact by the inverse of its selection probability (decision 0030)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.candidates) - set(CANDIDATES))
        if unknown or not self.candidates:
            raise ValueError(f"unknown candidates {unknown or '(none given)'}; choose from {list(CANDIDATES)}")
        if not 0 <= self.promotion_margin < 1:
            raise ValueError(f"promotion_margin must be in [0, 1) (got {self.promotion_margin})")

    def window(self, business_date: dt.date, settings: Settings) -> TrainingWindow:
        """The contacts a training for ``business_date`` learns from: a contact's outcome is final
        once the run that re-reads its day for the last time (``CRM_LATE_ARRIVAL_DAYS`` on) loaded it
        (decision 0029)."""
        late = settings.extraction.late_arrival_days
        return TrainingWindow(business_date, self.window_days, self.feature_step_days, late)


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
    training_rows: int = 0  # the measured fit's (the oldest 80 %)
    holdout_rows: int = 0
    served_rows: int = 0  # the registered version's: the whole window
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
    from ml.estimators import Weighted

    return Weighted(Pipeline([("features", pre), ("model", model)]))


def time_split(df: pd.DataFrame, share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows before and from the contact date that leaves ``share`` of the rows last."""
    cut = df["contact_date"].quantile(1 - share, interpolation="higher")
    return df[df["contact_date"] < cut], df[df["contact_date"] >= cut]


def fit_calibrated(name: str, train: pd.DataFrame, weighted: bool = False):
    """Fit ``name`` on every row of ``train``, its probabilities calibrated by a sigmoid fitted on
    out-of-fold predictions (three folds of consecutive rows: ``train`` is in contact-date order),
    each row weighing its :func:`contact_weights` when ``weighted`` (estimator and sigmoid alike).

    Every row reaches the estimator (a held-back calibration slice cost a quarter of them). A sigmoid
    (Platt) whatever the bank's size keeps the estimator's ranking; isotonic's top step tied the pairs
    the capacities pick from (the top 0.1-1% of each campaign's): 2.5 points of oracle capture."""
    from sklearn.calibration import CalibratedClassifierCV

    folds = 3
    outcomes = train["accepted"].value_counts()
    if len(outcomes) < 2 or int(outcomes.min()) < folds:
        raise TrainingError(
            f"the training slice has {int(outcomes.get(1, 0))} acceptances and {int(outcomes.get(0, 0))} refusals: "
            f"calibration needs at least {folds} of each; widen training_window_days"
        )
    method = "sigmoid"
    calibrated = CalibratedClassifierCV(estimator(name), method=method, cv=folds, ensemble=False)
    weights = contact_weights(train) if weighted else None
    return calibrated.fit(train[FEATURES], train["accepted"], sample_weight=weights), method


def contact_weights(contacts: pd.DataFrame) -> np.ndarray:
    """Each contact's weight in training: the inverse of the probability its offer was drawn with
    (``selection_probability``: an exploration contact drawn among k eligible offers stands for the k),
    at most ``MAX_WEIGHT``; 1 for the bank's own campaigns and the model's picks. Without it the
    loop learns mostly from its own past picks and too little of the offers it did not make."""
    if "selection_probability" not in contacts:
        return np.ones(len(contacts))
    p = pd.to_numeric(contacts["selection_probability"], errors="coerce").fillna(1.0).to_numpy(dtype="float64")
    return np.minimum(1.0 / np.clip(p, 1e-9, 1.0), MAX_WEIGHT)


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
    weights: np.ndarray | None = None,
) -> dict[str, float]:
    """What the gate compares (:func:`ml.gate.capture_metrics`, on the contacts chosen at random:
    ``random``, all when None, each counting its training weight: ``weights``, 1 when None) and the
    usual ranking measures."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    random = np.ones(len(y), dtype=bool) if random is None else random
    weights = np.ones(len(y)) if weights is None else weights

    order = np.argsort(-p, kind="stable")
    top = order[: max(1, len(p) // 10)]
    out = {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "lift_top_decile": float(y[top].mean() / max(y.mean(), 1e-9)),
        **capture_metrics(y[random], p[random], campaigns[random], capacities, weights[random]),
        "gate_contacts": float(random.sum()),
    }
    for campaign, idx in campaigns.groupby(campaigns.to_numpy()).indices.items():
        if len(np.unique(y[idx])) == 2:
            out[f"auc.{campaign}"] = float(roc_auc_score(y[idx], p[idx]))
    return out


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
    served = f"models:/{model_name}/{version}"
    names = model_inputs(served)
    missing = sorted(set(names) - set(holdout.columns))
    if missing:  # crm_daily refuses it too (ml.score's signature check): the new version takes over
        return version, None, f"champion v{version} cannot score today's features (missing {missing})"
    # the fit that was measured (a version before decision 0031 is its own); when it is gone (its run
    # deleted, the version copied to another registry), the version itself, which favours the champion
    measured = client.get_model_version(model_name, version).tags.get(MEASURED_TAG)
    try:
        model = mlflow.sklearn.load_model(measured or served)
    except (MlflowException, OSError) as exc:
        log.warning("champion v%s's measured fit %s cannot be loaded (%s): measuring the version itself",
                    version, measured, exc)  # fmt: skip
        model = mlflow.sklearn.load_model(served)
    p = model.predict_proba(holdout[names])[:, 1]
    y, campaigns = holdout["accepted"].to_numpy(), holdout["campaign_id"]
    return (
        version,
        holdout_metrics(y, p, campaigns, capacities, chosen_at_random(holdout), contact_weights(holdout)),
        "",
    )


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

    config = config or TrainingConfig()
    window = config.window(business_date, settings)
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
    y, weights = holdout["accepted"].to_numpy(), contact_weights(holdout)
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
                "weight_contacts": config.weight_contacts,
                "promotion_metric": PROMOTION_METRIC,
                "calibration_tolerance": CALIBRATION_TOLERANCE,
                "capacities_as_of": capacity_date.isoformat(),
                "split": "by contact date: fit 80% (sigmoid calibration out of 3 folds), holdout the latest 20%; "
                "the version registered serves the best fitted again on 100%",
                "features": ",".join(FEATURES),
                "backfilled_feature_dates": len(missing),
            }
        )
        profile = data_profile(df, train, holdout, out)
        mlflow.log_artifacts(str(out), artifact_path="data_profile")
        mlflow.log_metrics({"training_rows": len(train), "holdout_rows": len(holdout),
                            "acceptance_rate": profile["acceptance_rate"]})  # fmt: skip
        results: dict[str, tuple[dict, object]] = {}
        for name in config.candidates:
            with mlflow.start_run(run_name=name, nested=True) as child:
                model, method = fit_calibrated(name, train, config.weight_contacts)
                p = model.predict_proba(holdout[FEATURES])[:, 1]
                metrics = holdout_metrics(y, p, holdout["campaign_id"], capacities, chosen_at_random(holdout), weights)
                mlflow.log_params({"candidate": name, "calibration": method, **_estimator_params(model)})
                mlflow.log_metrics(metrics)
                cand = out / name
                cand.mkdir()
                calibration_plot(y, p, cand / "calibration.png", f"{name}: holdout calibration")
                feature_importance(model, holdout, cand / "feature_importance.csv")
                mlflow.log_artifacts(str(cand), artifact_path="evaluation")
                results[name] = (metrics, _log_model(model, example))
                log.info("candidate %s (run %s): %s", name, child.info.run_id, _brief(metrics))
        best = max(results, key=lambda n: (results[n][0][PROMOTION_METRIC], results[n][0]["roc_auc"]))
        metrics, measured = results[best]
        with mlflow.start_run(run_name=f"{best} on the whole window", nested=True) as child:
            served, method = fit_calibrated(best, df, config.weight_contacts)
            mlflow.log_params({"candidate": best, "calibration": method, "fitted_on": "every contact of the window",
                               "measured_model": measured.model_uri})  # fmt: skip
            mlflow.log_metric("training_rows", len(df))
            info = _log_model(served, example)
            log.info("%s fitted again on all %d contacts of the window (run %s)", best, len(df), child.info.run_id)
        version = str(mlflow.register_model(info.model_uri, settings.model.model_name,
                                            tags={MEASURED_TAG: measured.model_uri}).version)  # fmt: skip
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
        served_rows=len(df),
        backfilled_feature_dates=len(missing),
    )


def _log_model(model, example: pd.DataFrame):
    """Log ``model`` to the active run as ``model``, with its signature and an input example."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn import __version__ as sklearn_version

    return mlflow.sklearn.log_model(
        model,
        name="model",
        signature=infer_signature(example, model.predict_proba(example)[:, 1]),
        input_example=example,
        pip_requirements=[f"scikit-learn=={sklearn_version}", "pandas", "numpy"],
        skops_trusted_types=_trusted_types(model),
    )


def _estimator_params(model) -> dict[str, object]:
    """The classifier's own hyper-parameters (those with a simple value), as MLflow parameters."""
    inner = model.estimator
    inner = (inner.base if hasattr(inner, "base") else inner).named_steps["model"]
    return {f"model.{k}": v for k, v in inner.get_params().items() if isinstance(v, int | float | str | bool)}


def _brief(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "." not in k)
