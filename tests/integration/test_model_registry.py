"""The model registry fails closed: only "no such model" or "no such alias" means there is no
champion (and the first daily run may train one); any other registry error stops the task, so a
broken or refusing registry never gets a freshly trained model promoted in its place."""

from __future__ import annotations

import sqlite3

import pytest
from mlflow.exceptions import MlflowException

from crm.settings import get_settings
from ml.registry import champion, mlflow_client
from ml.score import scoring_champion


@pytest.fixture
def registry(tmp_path):
    """An MLflow store of its own (SQLite, as the local default)."""
    s = get_settings().replace(home=tmp_path)
    mlflow_client(s)
    return s


def test_no_model_and_no_alias_mean_no_champion(registry):
    assert champion(registry) is None
    mlflow_client(registry).create_registered_model(registry.model.model_name)  # a model with no version yet
    assert champion(registry) is None


def test_a_failing_registry_raises_instead_of_training_a_model(registry):
    database = registry.mlflow_tracking_uri.removeprefix("sqlite:///")
    with sqlite3.connect(database) as con:  # the registry's tables damaged: every registry call errors
        con.execute("alter table registered_models rename to registered_models_lost")
    with pytest.raises(MlflowException, match="Database migration in unexpected state"):
        champion(registry)
    with pytest.raises(MlflowException):
        scoring_champion(registry)  # an error, never None (None would have ensure_model train one)
