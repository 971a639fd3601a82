"""``make bench-loop``'s second loop scores with the sandbox's truth: registered as the champion of a
bench bank's registry, it is what ``crm_daily`` loads, reads the pairs' ids and gives their true
propensities."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.loop import register_oracle
from ml.features import FEATURES
from ml.registry import CHAMPION
from ml.score import _check_signature, scoring_champion
from sandbox.oracle import Oracle


def test_the_oracle_registered_as_champion_scores_the_truth(settings, tmp_path):
    import mlflow

    bench_bank = settings.replace(home=tmp_path)  # a registry of its own: the suite's champion stays
    version = register_oracle(bench_bank, customers=500, seed=3)

    ref = scoring_champion(bench_bank)
    assert ref is not None and ref.version == version
    uri = f"models:/{ref.name}@{CHAMPION}"
    # what score_pairs hands the model: the batch's columns the signature names
    reads = _check_signature(uri, ["customer_id", "campaign_id", "offer_id", *FEATURES])
    assert reads == ["customer_id", "campaign_id"]

    oracle = Oracle(500, 3)
    campaigns = oracle.bank.campaign_ids
    pairs = pd.DataFrame({"customer_id": np.array([7, 8, 9, 7], dtype=np.int64),
                          "campaign_id": [campaigns[0], campaigns[3], campaigns[0], campaigns[5]]})  # fmt: skip
    scored = mlflow.sklearn.load_model(uri).predict_proba(pairs)[:, 1]
    truth = [
        oracle.true_propensity(np.array([c]), k)[0] for c, k in zip(pairs.customer_id, pairs.campaign_id, strict=True)
    ]
    np.testing.assert_allclose(scored, truth)
    assert len(set(np.round(scored, 6))) == 4  # each pair its own: not one campaign's or customer's for all
