"""What a training run writes beside its models for a person to read: the calibration plot, the
permutation importance of the features, and the profile of the data the model learned from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ml.features import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES


def calibration_plot(y: np.ndarray, p: np.ndarray, path: Path, title: str) -> None:
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


def feature_importance(model, holdout: pd.DataFrame, path: Path) -> pd.DataFrame:
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


def data_profile(df: pd.DataFrame, train: pd.DataFrame, holdout: pd.DataFrame, out: Path) -> dict:
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
