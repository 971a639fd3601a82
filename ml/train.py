"""Train the campaign-propensity model, log it to MLflow and register it.

One model for every campaign (the campaign is a feature). The holdout is the latest 20% of
contacts by date: the split is by time, never at random.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd

from crm.settings import Settings, get_settings
from crm.warehouse import connect
from ml.features import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES, training_frame
from ml.registry import CHAMPION, ModelRef, mlflow_client

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    pass


def build_pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    pre = ColumnTransformer(
        [
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                CATEGORICAL_FEATURES,
            )
        ],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )
    model = HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.05,
        max_leaf_nodes=15,
        l2_regularization=1.0,
        random_state=0,
    )
    return Pipeline([("features", pre), ("model", model)])


def time_split(df: pd.DataFrame, holdout_share: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    cut = df["contact_date"].quantile(1 - holdout_share)
    return df[df["contact_date"] < cut], df[df["contact_date"] >= cut]


def train_and_register(business_date: dt.date, settings: Settings | None = None, promote: bool = True) -> ModelRef:
    """Train on the contacts known on ``business_date``; register; give it ``champion`` if asked."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn import __version__ as sklearn_version
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    settings = settings or get_settings()
    with connect(settings) as con:
        df = training_frame(con, business_date)
    if len(df) < 200 or df["accepted"].nunique() < 2:
        raise TrainingError(
            f"not enough past campaign contacts to train on for {business_date}: {len(df)} contacts, "
            f"{int(df['accepted'].sum()) if len(df) else 0} acceptances (need 200 with both outcomes)"
        )
    train, holdout = time_split(df)
    pipeline = build_pipeline().fit(train[FEATURES], train["accepted"])
    p = pipeline.predict_proba(holdout[FEATURES])[:, 1]
    y = holdout["accepted"].to_numpy()
    top = p >= np.quantile(p, 0.9)
    metrics = {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "lift_top_decile": float(y[top].mean() / max(y.mean(), 1e-9)),
        "train_rows": float(len(train)),
        "holdout_rows": float(len(holdout)),
        "base_rate": float(df["accepted"].mean()),
    }
    # the registered model is refit on every contact known on the business date
    pipeline = build_pipeline().fit(df[FEATURES], df["accepted"])
    client = mlflow_client(settings)
    example = df[FEATURES].head(5)
    with mlflow.start_run(run_name=f"train-{business_date}") as run:
        mlflow.log_params(
            {
                "business_date": business_date.isoformat(),
                "estimator": "HistGradientBoostingClassifier",
                "categorical_features": ",".join(CATEGORICAL_FEATURES),
                "numeric_features": ",".join(NUMERIC_FEATURES),
                "split": "time, last 20% of contacts as holdout",
            }
        )
        mlflow.log_metrics(metrics)
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=infer_signature(example, pipeline.predict_proba(example)[:, 1]),
            input_example=example,
            registered_model_name=settings.model_name,
            pip_requirements=[f"scikit-learn=={sklearn_version}", "pandas", "numpy"],
            # our own estimator, saved by us: its tree nodes are safe to load
            skops_trusted_types=["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"],
        )
        version = str(info.registered_model_version)
        log.info(
            "trained %s v%s in run %s: %s",
            settings.model_name,
            version,
            run.info.run_id,
            metrics,
        )
    if promote:
        client.set_registered_model_alias(settings.model_name, CHAMPION, version)
        log.info("%s v%s is now %s", settings.model_name, version, CHAMPION)
    return ModelRef(settings.model_name, version)
