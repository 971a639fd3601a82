"""A model whose signature does not match today's features is refused, naming the columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.features import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES
from ml.registry import mlflow_client
from ml.score import FeatureMismatch, _check_signature


def test_a_signature_without_a_feature_is_refused_with_its_name(settings):
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.dummy import DummyClassifier

    mlflow_client(settings)
    old_features = [c for c in FEATURES if c != "wallet_count_90d"]
    frame = pd.DataFrame({c: (["x"] * 4 if c in CATEGORICAL_FEATURES else np.arange(4.0)) for c in old_features})
    model = DummyClassifier().fit(frame[[c for c in old_features if c in NUMERIC_FEATURES]], [0, 1, 0, 1])
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="old", signature=infer_signature(frame, np.zeros(4)))
    with pytest.raises(FeatureMismatch, match=r"not in the signature \['wallet_count_90d'\]"):
        _check_signature(info.model_uri, [*FEATURES, "customer_id"])


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
    with pytest.raises(FeatureMismatch, match=r"missing \['age'\]"):
        _check_signature(info.model_uri, [c for c in FEATURES if c != "age"])
