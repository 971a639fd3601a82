"""``make bench-loop``: closed-loop days of the platform and the sandbox bank, as a bank lives them.

On a sandbox bank of its own (``--customers``, 100,000 by default), in ``<CRM_HOME>/bench/loop``:
``make demo`` for each of ``--days`` consecutive business dates ending on ``--last``, in date
order. Each run extracts what the bank did with the list the run before handed it (the model arm's
offers contacted, the control tracked, the exploration's random offers), builds the marts, scores,
publishes and hands its own list on (decision 0026). ``make train`` runs ``crm_model_training``
every ``--retrain-every`` days, so the model learns from the contacts its own lists made.

Then, per day (decision 0032):

- ``champion_capture_by_day``: the oracle capture of the champion that scored the day, on one pool,
  the first day's, which the loop had not yet worked (:func:`version_capture` measures every
  registered version there). What the loop served, day after day: it must not fall. Nor must the
  last version registered, promoted or not, against the first day's champion
  (``last_version_change``): the learning itself, before the gate chose. And the pool must tell a
  collapse: the candidate fitted on the model arm's contacts alone (a loop that learns only from
  its own lists) must capture at least 0.01 less there than fitted on all contacts
  (``own_picks_only_loss``, :func:`own_picks_capture`).
- ``capture_by_day``: ``ml.evaluate`` on the day's own pool (the model's choice over the oracle's,
  in expected value, among the customers the loop left). It falls for any model short of the truth,
  learning or not: the caps and exclusions take out what the model ranked high, and what stays is
  what it ranks low, where the oracle still finds what it missed. Beside it, a model of every trait
  the bank could know, fitted once before the loop (``ceiling_by_day``, :func:`static_ceiling`), and
  the first day's champion never replaced (``frozen_by_day``, :func:`frozen_capture`).
- per campaign, the incremental acceptances of ``marts.campaign_performance`` summed over the days
  (with their 95 % interval: the days' variances added) against the true uplift of the customers
  the bank contacted from the model arm (``Oracle.true_uplift``, summed).

With ``--oracle-loop``, the same days again on the same bank in ``<CRM_HOME>/bench/loop-oracle``,
with the sandbox's truth registered as the champion (:class:`sandbox.oracle.OracleModel`): the
pipeline as it runs with a perfect model, the bank contacting its lists. ``loop_capture_by_day``:
the expected value of our day's assignment over the oracle loop's (both the model's and the
control arm's offers, as ``ml.evaluate``), and ``loop_capture`` over the whole days. No target: the
oracle's loop takes its best customers first and ours reaches some later, so the day's ratio drifts
up for any model.

Writes ``<CRM_HOME>/bench/loop.json``. Targets: the champions' capture on the first day's pool
must not fall (the last week's mean at least the first week's less 0.01), nor the last version's
against the first champion's (by more than 0.01); learning from its own picks alone loses at least
0.01 there; and the true uplift lies in the estimate's interval for at least three campaigns in four.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

import numpy as np

from benchmarks.backfill import fresh_bench_home, run_crm
from ml.evaluate import PAIR_COLUMNS
from ml.features import FEATURES

LAST = dt.date(2026, 11, 27)
# what a model is measured with: the pairs' columns and every feature (a version reads its own of them)
SCORED_COLUMNS = list(dict.fromkeys([*PAIR_COLUMNS, *FEATURES]))
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
    choosing model ranked low; even this model's capture falls with it (a figure, no target: it
    scores pools another model left, decision 0032)."""
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


def _capture_with(model, inputs: list[str], day: dt.date, pairs, policy, oracle, seed: int) -> float:
    """The oracle capture of ``model`` choosing among ``pairs`` (the same arbitration, fed its probabilities)."""
    import pandas as pd

    from ml.arbitrate import arbitrate
    from ml.evaluate import compare

    scored = pairs.assign(propensity=model.predict_proba(pairs[inputs])[:, 1])
    chosen = arbitrate(scored[[*PAIR_COLUMNS, "propensity"]], policy)
    return compare(pd.DataFrame(pairs[PAIR_COLUMNS]), chosen, oracle, policy, day, seed).oracle_capture


def _champions(settings, days: list[dt.date]) -> dict[str, str]:
    """Per day, the registered version that scored it (each of the day's offers carries it)."""
    from crm.warehouse import warehouse

    with warehouse(settings).connect() as session:
        rows = session.rows(
            "select business_date, max(model_version) from marts.customer_campaign_assignments group by business_date"
        )
    by_day = {str(d)[:10]: str(v) for d, v in rows}
    missing = [str(d) for d in days if str(d) not in by_day]
    if missing:
        raise SystemExit(f"no assignment for {missing} in {settings.home}: the loop did not score those days")
    return {str(d): by_day[str(d)] for d in days}


def _load(settings, version: str):
    """(the model, the columns it reads) of a registered version."""
    import mlflow

    from ml.registry import mlflow_client, model_inputs

    mlflow_client(settings)
    uri = f"models:/{settings.model.model_name}/{version}"
    return mlflow.sklearn.load_model(uri), model_inputs(uri)


def frozen_capture(settings, days: list[dt.date], first: str, oracle, seed: int) -> dict[str, float]:
    """Per day, the oracle capture the first day's champion (version ``first``) would have had on that
    day's pool, had it never been replaced (the same arbitration, fed its probabilities): the loop
    without its retrains, beside the loop with them."""
    from ml.evaluate import measured_pairs

    model, inputs = _load(settings, first)
    out = {}
    for day in days:
        pairs, policy = measured_pairs(day, settings, SCORED_COLUMNS)
        out[str(day)] = _capture_with(model, inputs, day, pairs, policy, oracle, seed)
    return out


def version_capture(settings, day: dt.date, pool, oracle, seed: int) -> dict[str, float]:
    """Every registered version's oracle capture on one pool the loop had not yet worked: ``pool``,
    the (pairs, policy) of the first day ``day``. The loop's own pools fall away from any model that
    is not the truth (decision 0032); on a fixed pool, a version that learned worse from the loop's
    own picks captures less. Every version, promoted or not: what the learning made, before the gate
    chose."""
    from ml.registry import mlflow_client

    pairs, policy = pool
    found = mlflow_client(settings).search_model_versions(f"name = '{settings.model.model_name}'")
    out = {}
    for version in sorted((str(v.version) for v in found), key=int):
        model, inputs = _load(settings, version)
        out[version] = _capture_with(model, inputs, day, pairs, policy, oracle, seed)
    return out


def own_picks_capture(settings, days: list[dt.date], pool, oracle, seed: int) -> dict[str, float]:
    """Whether the fixed pool would see a loop that collapses onto its own picks: the per-campaign
    candidate fitted on the last day's training window, on all its contacts and on the model arm's
    alone (what a loop that learnt only from its own lists would learn), each measured on ``pool``
    as :func:`version_capture` measures the versions."""
    from crm.warehouse import warehouse
    from ml.train import TrainingConfig, TrainingError, fit_calibrated
    from ml.training_set import training_frame

    pairs, policy = pool
    with warehouse(settings).connect() as session:
        contacts = training_frame(session, TrainingConfig().window(days[-1], settings))
    out = {}
    for name, rows in (("all_contacts", contacts), ("own_picks_only", contacts[contacts["arm"] == "model"])):
        try:
            model, _ = fit_calibrated("per_campaign_logistic", rows.reset_index(drop=True))
        except TrainingError as error:  # a loop of a few days: none of its contacts is final yet
            print(f"own picks not measured ({name}): {error}", flush=True)
            return {}
        out[name] = _capture_with(model, FEATURES, days[0], pairs, policy, oracle, seed)
    return out


def register_oracle(settings, customers: int, seed: int) -> str:
    """Register the sandbox bank's truth as the champion of the registry ``settings`` name: the
    version ``crm_daily`` will score with."""
    import mlflow
    import pandas as pd

    from ml.registry import CHAMPION, mlflow_client
    from ml.train import _log_model
    from sandbox.oracle import Oracle, OracleModel

    client = mlflow_client(settings)
    model = OracleModel(customers, seed).fit()
    example = pd.DataFrame({"customer_id": np.array([1, 2], dtype=np.int64),
                            "campaign_id": Oracle(customers, seed).bank.campaign_ids[:2]})  # fmt: skip
    with mlflow.start_run(run_name="the sandbox's oracle (make bench-loop)"):
        info = _log_model(model, example)  # as training logs its versions: signature, example, trusted types
    version = str(mlflow.register_model(info.model_uri, settings.model.model_name).version)
    client.set_registered_model_alias(settings.model.model_name, CHAMPION, version)
    return version


def oracle_loop(bench_home, days: list[dt.date], customers: int, seed: int, publish: tuple[str, ...]):
    """The days again on the same bank, in a home of their own, with the truth as the champion:
    each day's ``ml.evaluate`` of the oracle's own loop (its ``ours_value``: what the loop of a
    perfect model earns that day)."""
    from crm.settings import Settings
    from ml.evaluate import evaluate

    _, home, bank = fresh_bench_home("loop-oracle", customers, seed, bench_home)
    settings = Settings(home=home)
    register_oracle(settings, customers, seed)
    for day in days:
        code, _ = run_crm("demo", "--date", str(day), *bank, *publish)
        if code:
            raise SystemExit(f"the oracle's loop: make demo DATE={day} failed (exit {code})")
    return {str(d): evaluate(d, customers, seed, settings) for d in days}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--last", type=dt.date.fromisoformat, default=LAST)
    parser.add_argument("--retrain-every", type=int, default=2)
    parser.add_argument("--oracle-loop", action="store_true", help="then the same days again on the same bank "
                        "with the truth as the champion: what our loop earns each day over what a perfect model's "
                        "loop earns (about 25 minutes more at 100,000 customers)")  # fmt: skip
    parser.add_argument("--force-publish", action="store_true", help="a bank far smaller than the campaigns' "
                        "capacities loses a third of its audience a day to the contact caps, which the publish "
                        "guard refuses (CRM_MAX_AUDIENCE_SHRINK): publish anyway")  # fmt: skip
    args = parser.parse_args(argv)

    from benchmarks.report import report
    from crm.settings import Settings
    from ml.evaluate import evaluate, measured_pairs
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
    oracle = Oracle(args.customers, args.seed)
    ours = {str(d): evaluate(d, args.customers, args.seed, settings) for d in days}
    capture = {d: e.oracle_capture for d, e in ours.items()}
    pool = measured_pairs(days[0], settings, SCORED_COLUMNS)  # the fixed pool, the first day's
    versions = version_capture(settings, days[0], pool, oracle, args.seed)
    served = _champions(settings, days)
    champions = {d: versions[v] for d, v in served.items()}
    own_picks = own_picks_capture(settings, days, pool, oracle, args.seed)
    ceiling = static_ceiling(settings, days, oracle, args.seed)
    frozen = frozen_capture(settings, days, served[str(days[0])], oracle, args.seed)
    per_campaign = uplift(settings, oracle)
    values = list(capture.values())
    week = min(7, len(values) // 2) or 1  # the first and the last week, never overlapping

    def change(by_day: dict[str, float]) -> float:
        v = list(by_day.values())
        return round(float(np.mean(v[-week:]) - np.mean(v[:week])), 4)

    def first_week(by_day: dict[str, float]) -> float:
        return round(float(np.mean(list(by_day.values())[:week])), 4)

    def last_week(by_day: dict[str, float]) -> float:
        return round(float(np.mean(list(by_day.values())[-week:])), 4)

    covered = sum(c["low"] <= c["true"] <= c["high"] for c in per_campaign.values())
    figures = {
        "customers": args.customers,
        "days": len(days),
        "retrained_on": retrained,
        "champion_by_day": served,
        "champion_capture_by_day": champions,
        "champion_capture_first_week": first_week(champions),
        "champion_capture_last_week": last_week(champions),
        "champion_capture_change": change(champions),
        "version_capture": versions,
        # the last version registered, promoted or not, against the first day's champion: the learning itself
        "last_version_change": round(versions[max(versions, key=int)] - versions[served[str(days[0])]], 4),
        "capture_by_day": capture,
        "capture_first_week": first_week(capture),
        "capture_last_week": last_week(capture),
        "capture_change": change(capture),
        "ceiling_by_day": ceiling,
        "ceiling_change": change(ceiling),
        "capture_change_beyond_ceiling": round(change(capture) - change(ceiling), 4),
        "frozen_by_day": frozen,
        "learning_gain_last_week": round(last_week(capture) - last_week(frozen), 4),
        "uplift_by_campaign": per_campaign,
        "campaigns_measured": len(per_campaign),
        "uplift_covered_share": round(covered / max(len(per_campaign), 1), 3),
        "run_s_by_day": seconds,
    }
    targets = {"champion_capture_change": -0.01, "last_version_change": -0.01, "uplift_covered_share": 0.75}
    if own_picks:  # what learning from its own lists alone would cost on the fixed pool: it can see a collapse
        figures["refit_all_contacts_capture"] = own_picks["all_contacts"]
        figures["refit_own_picks_only_capture"] = own_picks["own_picks_only"]
        figures["own_picks_only_loss"] = round(own_picks["all_contacts"] - own_picks["own_picks_only"], 4)
        targets["own_picks_only_loss"] = 0.01
    if args.oracle_loop:  # last: it points the environment at a home of its own
        print(json.dumps(figures), flush=True)  # what the first loop measured, should the second fail
        perfect = oracle_loop(bench_home, days, args.customers, args.seed, publish)
        # the oracle's loop chose what the same-day oracle would: the truth did its scoring
        figures["oracle_loop_self_capture_min"] = min(e.oracle_capture for e in perfect.values())
        figures["oracle_loop_value_by_day"] = {d: e.ours_value for d, e in perfect.items()}
        figures["value_by_day"] = {d: e.ours_value for d, e in ours.items()}
        figures["loop_capture_by_day"] = {d: round(ours[d].ours_value / perfect[d].ours_value, 4) for d in ours}
        figures["loop_capture"] = round(sum(e.ours_value for e in ours.values())
                                        / sum(e.ours_value for e in perfect.values()), 4)  # fmt: skip
        targets["oracle_loop_self_capture_min"] = 0.999
    return report("loop", figures, {}, targets, bench_home)


if __name__ == "__main__":
    sys.exit(main())
