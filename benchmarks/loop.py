"""``make bench-loop``: closed-loop days of the platform and the sandbox bank, as a bank lives them.

On a sandbox bank of its own (``--customers``, 100,000 by default), in ``<CRM_HOME>/bench/loop``:
``make demo`` for each of ``--days`` consecutive business dates ending on ``--last``, in date
order. Each run extracts what the bank did with the list the run before handed it (the model arm's
offers contacted, the control tracked, the exploration's random offers), builds the marts, scores,
publishes and hands its own list on (decision 0026). ``make train`` runs ``crm_model_training``
every ``--retrain-every`` days, so the model learns from the contacts its own lists made.

Then, per day, ``ml.evaluate`` against the sandbox's oracle (``oracle_capture``: the model's
choice over the oracle's, in expected value), and per campaign the incremental acceptances of
``marts.campaign_performance`` summed over the days (with their 95 % interval: the days'
variances added) against the true uplift of the customers the bank contacted from the model arm
(``Oracle.true_uplift``, summed). Writes ``<CRM_HOME>/bench/loop.json``.

Beside it, per day, the capture of a model of every trait the bank could know, fitted once before
the loop (``ceiling_by_day``, :func:`static_ceiling`): what the shrinking pool alone takes; and the
capture the first day's champion would have had, never replaced (``frozen_by_day``,
:func:`frozen_capture`): what the retrains added (``learning_gain_last_week``).

Targets: capture must not fall (the last week's mean at least the first week's less 0.01), nor fall
more than that static ceiling's (``capture_change_beyond_ceiling``), and the true uplift lies in the
estimate's interval for at least three campaigns in four.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import numpy as np

from benchmarks.backfill import fresh_bench_home, run_crm

LAST = dt.date(2026, 11, 27)
Z95 = 1.959964


def uplift(settings, oracle) -> dict[str, dict[str, float]]:
    """Per campaign: the estimate summed over the days, its interval, and the true uplift of the
    model arm's contacts the estimate counts."""
    from crm.warehouse import warehouse

    with warehouse(settings).connect() as session:
        estimated = session.frame(
            "select campaign_id, sum(incremental_acceptances) as estimated, "
            "sum(power((incremental_high - incremental_low) / (2 * :z), 2)) as variance, "
            "sum(treated) as treated, sum(control) as control "
            "from marts.campaign_performance where incremental_acceptances is not null group by campaign_id",
            {"z": Z95},
        )
        # the model arm's contacts of the days, campaigns and channels the estimate covers (a day without
        # a control member has none): the same people campaign_performance counts as treated
        treated = session.frame(
            "select c.campaign_id, c.customer_id from marts.fct_campaign_contacts c "
            "join marts.customer_campaign_assignments a on a.customer_id = c.customer_id "
            "and a.campaign_id = c.campaign_id and a.business_date = c.list_date "
            "join marts.campaign_performance p on p.performance_date = c.contact_date "
            "and p.campaign_id = c.campaign_id and p.channel = c.channel "
            "where a.arm = 'model' and p.incremental_acceptances is not null"
        )
    out = {}
    for row in estimated.itertuples():
        ids = treated.loc[treated["campaign_id"] == row.campaign_id, "customer_id"].to_numpy(dtype=np.int64)
        if len(ids) != int(row.treated):
            raise SystemExit(f"{row.campaign_id}: {len(ids)} treated contacts found, campaign_performance counts "
                             f"{int(row.treated)}: the truth would be of other people than the estimate")  # fmt: skip
        half = Z95 * float(row.variance) ** 0.5
        out[str(row.campaign_id)] = {
            "estimated": round(float(row.estimated), 1),
            "low": round(float(row.estimated) - half, 1),
            "high": round(float(row.estimated) + half, 1),
            "true": round(float(oracle.true_uplift(ids, str(row.campaign_id)).sum()), 1),
            "treated": int(row.treated),
            "control": int(row.control),
        }
    return out


def static_ceiling(settings, days: list[dt.date], oracle, seed: int) -> dict[str, float]:
    """Per day, the oracle capture of a model that knows every trait the bank could know (the
    sandbox's hidden traits but the young-family draw: ``make bench-scoring``'s ``family_unseen``),
    fitted once on the first day's training window (all of it: no holdout) and never again. The caps and
    exclusions take each day's chosen pairs out of the next days' pool, and what stays is what the
    choosing model ranked low; even this model's capture falls with it. Ours falling no faster is
    what says the loop does not collapse onto its own picks."""
    from benchmarks.scoring import trait_capture, trait_models
    from crm.warehouse import warehouse
    from ml.evaluate import measured_pairs
    from ml.train import TrainingConfig
    from ml.training_set import training_frame

    with warehouse(settings).connect() as session:
        contacts = training_frame(session, TrainingConfig().window(days[0], settings))
    models = trait_models(contacts, oracle, family_seen=False)
    out = {}
    for day in days:
        pairs, policy = measured_pairs(day, settings)
        out[str(day)] = trait_capture(models, False, pairs, policy, oracle, day, seed)
    return out


def frozen_capture(settings, days: list[dt.date], oracle, seed: int) -> dict[str, float]:
    """Per day, the oracle capture the first day's champion would have had on that day's pool, had it
    never been replaced (the same arbitration, fed its probabilities): the loop without its
    retrains, beside the loop with them."""
    import mlflow
    import pandas as pd

    from ml.arbitrate import arbitrate
    from ml.evaluate import PAIR_COLUMNS, compare, measured_pairs
    from ml.features import FEATURES
    from ml.registry import mlflow_client

    client = mlflow_client(settings)
    first = min(int(v.version) for v in client.search_model_versions(f"name = '{settings.model.model_name}'"))
    model = mlflow.sklearn.load_model(f"models:/{settings.model.model_name}/{first}")
    columns = list(dict.fromkeys([*PAIR_COLUMNS, *FEATURES]))
    out = {}
    for day in days:
        pairs, policy = measured_pairs(day, settings, columns)
        scored = pairs.assign(propensity=model.predict_proba(pairs[FEATURES])[:, 1])
        chosen = arbitrate(scored[[*PAIR_COLUMNS, "propensity"]], policy)
        out[str(day)] = compare(pd.DataFrame(pairs[PAIR_COLUMNS]), chosen, oracle, policy, day, seed).oracle_capture
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--last", type=dt.date.fromisoformat, default=LAST)
    parser.add_argument("--retrain-every", type=int, default=2)
    parser.add_argument("--force-publish", action="store_true", help="a bank far smaller than the campaigns' "
                        "capacities loses a third of its audience a day to the contact caps, which the publish "
                        "guard refuses (CRM_MAX_AUDIENCE_SHRINK): publish anyway")  # fmt: skip
    args = parser.parse_args(argv)

    from benchmarks.report import report
    from crm.settings import Settings
    from ml.evaluate import evaluate
    from sandbox.oracle import Oracle

    bench_home, home, bank = fresh_bench_home("loop", args.customers, args.seed)
    publish = ("--force-publish",) if args.force_publish else ()
    days = [args.last - dt.timedelta(days=k) for k in range(args.days - 1, -1, -1)]
    seconds, retrained = {}, []
    for k, day in enumerate(days):
        code, seconds[str(day)] = run_crm("demo", "--date", str(day), *bank, *publish)
        if code:
            print(f"make demo DATE={day} failed (exit {code}): the loop stops there", flush=True)
            return code
        if (k + 1) % args.retrain_every == 0 and day != days[-1]:
            code, _ = run_crm("train", "--date", str(day), *bank)
            if code:
                print(f"make train DATE={day} failed (exit {code})", flush=True)
                return code
            retrained.append(str(day))
    settings = Settings(home=home)
    capture = {str(d): evaluate(d, args.customers, args.seed, settings).oracle_capture for d in days}
    ceiling = static_ceiling(settings, days, Oracle(args.customers, args.seed), args.seed)
    frozen = frozen_capture(settings, days, Oracle(args.customers, args.seed), args.seed)
    per_campaign = uplift(settings, Oracle(args.customers, args.seed))
    values = list(capture.values())
    week = min(7, len(values) // 2) or 1  # the first and the last week, never overlapping

    def change(by_day: dict[str, float]) -> float:
        v = list(by_day.values())
        return round(float(np.mean(v[-week:]) - np.mean(v[:week])), 4)

    covered = sum(c["low"] <= c["true"] <= c["high"] for c in per_campaign.values())
    figures = {
        "customers": args.customers,
        "days": len(days),
        "retrained_on": retrained,
        "capture_by_day": capture,
        "capture_first_week": round(float(np.mean(values[:week])), 4),
        "capture_last_week": round(float(np.mean(values[-week:])), 4),
        "capture_change": change(capture),
        "ceiling_by_day": ceiling,
        "ceiling_change": change(ceiling),
        "capture_change_beyond_ceiling": round(change(capture) - change(ceiling), 4),
        "frozen_by_day": frozen,
        "learning_gain_last_week": round(float(np.mean(values[-week:]) - np.mean(list(frozen.values())[-week:])), 4),
        "uplift_by_campaign": per_campaign,
        "campaigns_measured": len(per_campaign),
        "uplift_covered_share": round(covered / max(len(per_campaign), 1), 3),
        "run_s_by_day": seconds,
    }
    targets = {"capture_change": -0.01, "capture_change_beyond_ceiling": -0.01, "uplift_covered_share": 0.75}
    return report("loop", figures, {}, targets, bench_home)


if __name__ == "__main__":
    sys.exit(main())
