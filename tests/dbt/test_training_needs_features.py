"""Training never runs the pipeline itself: on a warehouse whose feature store lacks the dates
before the window's contacts, ``train_and_register`` stops, naming the dates and the task that
builds them, before anything is logged or registered (it used to extract and run dbt itself)."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest
from dbt_warehouse import empty_raw_warehouse, run_dbt

from benchmarks.warehouses import land
from crm.settings import get_settings
from crm.warehouse import warehouse
from ml.train import TrainingError, train_and_register
from ml.training_set import TrainingWindow, feature_dates_missing
from sandbox.bank import Bank

D = dt.date(2026, 11, 27)


def test_a_window_without_its_features_stops_naming_the_dates_and_the_task(tmp_path, monkeypatch):
    with duckdb.connect(str(empty_raw_warehouse(tmp_path))) as con:
        land(con, Bank(300, seed=5), D, 100, 100)
    done = run_dbt(tmp_path, "build", "--exclude", "test_type:unit", "tag:after_scoring", business_date=D)
    assert done.returncode == 0, done.stdout[-3000:]
    mlflow = tmp_path / "mlflow"
    monkeypatch.setenv("CRM_MLFLOW_TRACKING_URI", f"sqlite:///{mlflow / 'mlflow.db'}")
    settings = get_settings().replace(home=tmp_path)
    with warehouse(settings).connect() as session:
        missing = feature_dates_missing(session, TrainingWindow(D))
    assert missing, "the warehouse holds features as of D only: the window's earlier dates are missing"
    with pytest.raises(TrainingError) as stopped:
        train_and_register(D, settings)
    message = str(stopped.value)
    assert f"as of {', '.join(map(str, missing))} missing" in message
    assert "crm_model_training's backfill_features task builds them" in message
    assert not (mlflow / "mlflow.db").exists()  # nothing logged, nothing registered
