"""A model that needs a column today's features lack is refused, naming it; one trained before a
release added a feature scores on the columns it reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.features import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES
from ml.registry import mlflow_client
from ml.score import FeatureMismatch, _check_signature


def test_a_champion_trained_before_a_feature_was_added_scores_on_what_it_reads(settings, caplog):
    """A release that adds a feature must not stop crm_daily: the champion scores on the columns its
    signature names, and the log names the feature it leaves out and how to use it."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.dummy import DummyClassifier

    mlflow_client(settings)
    old_features = [c for c in FEATURES if c != "wallet_count_90d"]
    frame = pd.DataFrame({c: (["x"] * 4 if c in CATEGORICAL_FEATURES else np.arange(4.0)) for c in old_features})
    model = DummyClassifier().fit(frame[[c for c in old_features if c in NUMERIC_FEATURES]], [0, 1, 0, 1])
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="old", signature=infer_signature(frame, np.zeros(4)))
    with caplog.at_level("WARNING", logger="ml.score"):
        reads = _check_signature(info.model_uri, [*FEATURES, "customer_id"])
    assert reads == old_features
    assert "does not read today's features ['wallet_count_90d']" in caplog.text and "crm_model_training" in caplog.text


def test_a_matching_signature_passes(settings):
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.dummy import DummyClassifier

    mlflow_client(settings)
    frame = pd.DataFrame({c: (["x"] * 4 if c in CATEGORICAL_FEATURES else np.arange(4.0)) for c in FEATURES})
    model = DummyClassifier().fit(frame[NUMERIC_FEATURES], [0, 1, 0, 1])
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="now", signature=infer_signature(frame, np.zeros(4)))
    _check_signature(info.model_uri, [*FEATURES, "customer_id", "offer_id"])
    with pytest.raises(FeatureMismatch, match=r"today's features lack \['age'\]"):
        _check_signature(info.model_uri, [c for c in FEATURES if c != "age"])


def _register_champion(settings, features: list[str], tags: dict | None = None, signed: bool = True) -> str:
    """A registered version reading ``features``, with the champion alias; its version."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.dummy import DummyClassifier

    client = mlflow_client(settings)
    frame = pd.DataFrame({c: (["x"] * 4 if c in CATEGORICAL_FEATURES else np.arange(4.0)) for c in features})
    model = DummyClassifier(strategy="prior").fit(frame[[c for c in features if c in NUMERIC_FEATURES]], [0, 1, 0, 1])
    with mlflow.start_run():
        signature = infer_signature(frame, np.zeros(4)) if signed else None
        info = mlflow.sklearn.log_model(model, name="model", signature=signature)
    name = settings.model.model_name
    version = str(mlflow.register_model(info.model_uri, name, tags=tags).version)
    client.set_registered_model_alias(name, "champion", version)
    return version


def _holdout(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({c: (["x"] * n if c in CATEGORICAL_FEATURES else rng.random(n)) for c in FEATURES})
    accepted = (rng.random(n) < 0.3).astype(int)
    return frame.assign(campaign_id="CMP-A", accepted=accepted, arm=None, selection_probability=1.0)


def test_a_champion_that_needs_a_column_today_s_features_lack_gives_way_to_the_new_version(settings):
    """crm_daily refuses a champion that reads a column the features no longer have: training must not
    keep it because it cannot be beaten by the margin."""
    from ml.gate import Capacity
    from ml.train import _champion_on, promotion

    version = _register_champion(settings, [*FEATURES, "retired_feature"])
    champion = _champion_on(_holdout(), mlflow_client(settings), settings.model.model_name,
                            {"CMP-A": Capacity(share=0.1, worth=1.0)})  # fmt: skip
    assert champion[:2] == (version, None) and "missing ['retired_feature']" in champion[2]
    alias, reason = promotion("9", "per_campaign_logistic", {"capture_at_capacity": 0.0, "calibration_error": 1.0},
                              champion, 0.005)  # fmt: skip
    assert alias == "champion" and "cannot score today's features" in reason


def test_a_champion_whose_measured_fit_is_gone_is_measured_by_itself(settings, caplog):
    """The gate measures a champion by the fit that was measured (decision 0031); when that fit is
    gone (its run deleted, the version copied to another registry), by the version, with a warning."""
    from ml.gate import Capacity
    from ml.train import MEASURED_TAG, _champion_on

    version = _register_champion(settings, FEATURES, tags={MEASURED_TAG: "models:/m-0123456789abcdef0123456789abcdef"})
    with caplog.at_level("WARNING", logger="ml.train"):
        champion = _champion_on(_holdout(), mlflow_client(settings), settings.model.model_name,
                                {"CMP-A": Capacity(share=0.1, worth=1.0)})  # fmt: skip
    assert champion[0] == version and champion[1] is not None and "capture_at_capacity" in champion[1]
    assert f"champion v{version}'s measured fit" in caplog.text and "cannot be loaded" in caplog.text


def test_a_champion_registered_without_a_signature_is_measured_on_today_s_features(settings):
    """Scoring reads today's features for a version registered by hand without a signature; the gate
    measures it the same way instead of failing every training."""
    from ml.gate import Capacity
    from ml.train import _champion_on

    version = _register_champion(settings, FEATURES, signed=False)
    champion = _champion_on(_holdout(), mlflow_client(settings), settings.model.model_name,
                            {"CMP-A": Capacity(share=0.1, worth=1.0)})  # fmt: skip
    assert champion[0] == version and champion[1] is not None and "capture_at_capacity" in champion[1]
