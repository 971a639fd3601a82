"""``python -m entrypoints.cli``: the commands behind the Makefile's verbs."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from crm import cache
from crm.services import running_services, stop_services_started_since
from crm.settings import REPO_ROOT, Settings, get_settings
from crm.warehouse import connect, run_dbt

STARTING = re.compile(r"\[DAG TEST\] starting task_id=([\w.]+)(?: map_index=(-?\d+))?")


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def _dbt(settings: Settings, *args: str) -> int:
    """Run the dbt command line on the project, against the local warehouse."""
    # the date the docs' compiled SQL shows, unless one is set
    business_date = os.environ.get("CRM_BUSINESS_DATE") or yesterday_in_lima()
    return run_dbt(*args, duckdb_path=settings.duckdb_path, business_date=business_date, capture=False).returncode


def dbt_parse(settings: Settings) -> int:
    """Parse the dbt project into target/manifest.json (what Cosmos renders the DAG from)."""
    return _dbt(settings, "parse", "--quiet")


def docs(args: argparse.Namespace) -> int:
    """Generate the dbt docs site (models, columns, tests, lineage, the warehouse's catalog) into
    <CRM_HOME>/dbt-docs and serve it for analysts."""
    settings = get_settings()
    settings.ensure_dirs()
    target = settings.home / "dbt-docs"
    if not settings.duckdb_path.exists():
        _say("no warehouse yet: the site will describe the models without their tables (run make demo first)")
    code = _dbt(settings, "docs", "generate", "--target-path", str(target), "--quiet")
    if code or args.no_serve:
        if not code:
            _say(f"dbt docs generated in {target} (index.html, manifest.json, catalog.json)")
        return code
    _say(f"dbt docs on http://127.0.0.1:{args.port} (Ctrl-C stops it)")
    try:
        return _dbt(settings, "docs", "serve", "--target-path", str(target), "--port", str(args.port), "--host",
                    "127.0.0.1", "--no-browser")  # fmt: skip
    except KeyboardInterrupt:
        return 0


def _failure_cause(log_text: str) -> str:
    """The last exception line of a failed run's log (what a user needs to see first)."""
    lines = [ln for ln in log_text.splitlines() if re.search(r"\b\w+(Error|Exception|Failed|Exceeded|Mismatch)\b:", ln)]
    return lines[-1].strip()[:600] if lines else "see the log"


def summarize(business_date: dt.date, settings: Settings) -> dict:
    """What the run produced, read back from each stage's output."""
    import pyarrow.parquet as pq

    from ingestion.extract import partition_path
    from models.core_banking import ENTITIES

    out: dict = {"landing": {}, "quarantine": {}, "raw": {}, "marts": {}}
    for entity in ENTITIES:
        path = partition_path(settings.landing_dir, entity, business_date)
        out["landing"][entity] = pq.read_metadata(path).num_rows if path.exists() else 0
        qpath = partition_path(settings.quarantine_dir, entity, business_date)
        out["quarantine"][entity] = pq.read_metadata(qpath).num_rows if qpath.exists() else 0
    with connect(settings) as con:
        for entity in ENTITIES:
            out["raw"][entity] = con.execute(f"select count(*) from raw.{entity}").fetchone()[0]
        for table, col in (
            ("fct_transactions", "booking_date"),
            ("customer_features", "as_of_date"),
            ("campaign_eligibility", "as_of_date"),
            ("customer_campaign_assignments", "business_date"),
            ("campaign_performance", "performance_date"),
            ("customer_360", "as_of_date"),
        ):
            out["marts"][table] = con.execute(
                f"select count(*) from marts.{table} where {col} = ?", [business_date]
            ).fetchone()[0]
        row = con.execute(
            "select any_value(model_name), any_value(model_version), count(distinct customer_id) "
            "from marts.customer_campaign_assignments where business_date = ?",
            [business_date],
        ).fetchone()
        out["model"] = {"name": row[0], "version": row[1]}
        out["customers_with_offers"] = row[2]
    return out


def _snapshot_meta(settings: Settings) -> dict | None:

    from crm.services import ensure_redis
    from serving.keys import Keys

    keys = Keys(settings.redis_prefix)
    with cache.connect(ensure_redis(settings), decode_responses=True) as client:
        sid = client.get(keys.current)
        meta = client.get(keys.meta(sid)) if sid else None
    return json.loads(meta) if meta else None


def ensure_demo_keys(settings: Settings) -> dict[str, str]:
    """One API key per role for the demo, in .crm/demo_api_keys.json (hashes in the key store)."""
    from serving.auth import hash_key, issue_keys, load_key_store

    path = settings.demo_api_keys_path
    if path.exists():
        keys = json.loads(path.read_text())
        store = load_key_store(settings.api_keys_path)
        if all(hash_key(k) in store for k in keys.values()):
            return keys
    keys = issue_keys(settings.api_keys_path)
    path.write_text(json.dumps(keys, indent=2))
    path.chmod(0o600)
    return keys


def run_daily(
    business_date: dt.date,
    customers: int,
    seed: int,
    settings: Settings,
    quiet: bool = False,
    force_publish: bool = False,
) -> int:
    """Run crm_daily for ``business_date`` through ``airflow dags test``; 0 when it succeeded."""
    conf = {"customers": customers, "seed": seed, "force_publish": force_publish}
    rc = run_dag("crm_daily", business_date, conf, settings, quiet)
    if rc:
        _say("nothing was published to the cache from this run.")
    return rc


def run_dag(dag_id: str, logical_date: dt.date, conf: dict, settings: Settings, quiet: bool = False) -> int:
    """Run ``dag_id`` for ``logical_date`` through ``airflow dags test``; 0 when it succeeded."""
    from crm.airflow_env import airflow_env, prepare_airflow

    settings.ensure_dirs()
    prepare_airflow(settings)
    log_path = settings.home / "runs" / f"{dag_id}_{logical_date}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = airflow_env(settings, {"CRM_TASK_RETRIES": "0"})
    cmd = [str(Path(sys.executable).parent / "airflow"), "dags", "test", dag_id, logical_date.isoformat(),
           "-c", json.dumps(conf)]  # fmt: skip
    _say(f"running {dag_id} for {logical_date} through Airflow (airflow dags test); log: {log_path}")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO_ROOT,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            m = STARTING.search(line)
            if m and not quiet:
                _say(f"  {m.group(1)}{'' if m.group(2) in (None, '-1') else '[' + m.group(2) + ']'}")
        rc = proc.wait()
    text = log_path.read_text()
    finished = re.search(r"DagRun Finished:[^\n]*state=(\w+)", text)
    ok = rc == 0 and finished is not None and finished.group(1) == "success"
    failed = []
    if "Task failed with exception" in text:
        before_failure = text[: text.index("Task failed with exception")]
        failed = [m.group(1) for m in STARTING.finditer(before_failure)][-1:]
    if not ok:
        stage = failed[0] if failed else dag_id
        _say(f"\n{dag_id} FAILED for {logical_date} at stage {stage}: {_failure_cause(text)}")
        _say(f"Full log: {log_path}")
        return 1
    return 0


def train(args: argparse.Namespace) -> int:
    """``make train``: crm_model_training through Airflow, then what it decided."""
    from crm.services import running_services, stop_services_started_since

    os.environ["CRM_SANDBOX_CUSTOMERS"] = str(args.customers)
    os.environ["CRM_SANDBOX_SEED"] = str(args.seed)
    settings = get_settings()
    business_date = dt.date.fromisoformat(args.date)
    conf = {"business_date": business_date.isoformat(), "customers": args.customers, "seed": args.seed}
    if args.window:
        conf["training_window_days"] = args.window
    if args.candidates:
        conf["candidates"] = args.candidates.split(",")
    if args.margin is not None:
        conf["promotion_margin"] = args.margin
    before = running_services(settings)
    try:
        rc = run_dag("crm_model_training", business_date + dt.timedelta(days=1), conf, settings)
    finally:
        stop_services_started_since(before, settings)
    if rc:
        return rc
    from ml.registry import mlflow_client

    client = mlflow_client(settings)
    latest = max(client.search_model_versions(f"name = '{settings.model_name}'"), key=lambda v: int(v.version))
    _say(f"\ncrm_model_training succeeded as of {business_date}: {settings.model_name} v{latest.version} "
         f"({latest.tags.get('candidate')}) is {latest.tags.get('promotion.decision')}")  # fmt: skip
    _say(f"  {latest.tags.get('promotion.reason')}")
    _say(f"runs, metrics and plots: MLflow experiment crm-campaign-propensity in {settings.mlflow_tracking_uri}")
    _say(f"  (.venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri})")
    return 0


def demo(args: argparse.Namespace) -> int:
    from crm.services import running_services, stop_services_started_since

    os.environ["CRM_SANDBOX_CUSTOMERS"] = str(args.customers)
    os.environ["CRM_SANDBOX_SEED"] = str(args.seed)
    settings = get_settings()
    business_date = dt.date.fromisoformat(args.date)
    before = running_services(settings)
    try:
        rc = run_daily(business_date, args.customers, args.seed, settings, force_publish=args.force_publish)
        if rc:
            return rc
        summary = summarize(business_date, settings)
        meta = _snapshot_meta(settings)
        keys = ensure_demo_keys(settings)
    finally:
        stopped = stop_services_started_since(before, settings)
    _say(
        f"\ncrm_daily succeeded for business date {business_date} ({args.customers} sandbox customers, seed {args.seed})"
    )
    _say("rows per stage:")
    for stage in ("landing", "quarantine", "raw", "marts"):
        _say(f"  {stage:<11}" + ", ".join(f"{k}={v}" for k, v in summary[stage].items()))
    _say(f"customers with offers: {summary['customers_with_offers']}")
    _say(f"model: {summary['model']['name']} version {summary['model']['version']} (alias champion)")
    if meta:
        _say(
            f"cache snapshot: {meta['snapshot_id']} ({meta['customers']} customers, {meta['offers']} offers, "
            f"{meta['segments']} segments), fresh until {meta['expires_at']}, served until {meta['served_until']}"
        )
    _say(f"demo API keys (one per role): {settings.demo_api_keys_path}")
    if stopped:
        saved = " (Redis saved the cache; make serve reloads it)" if "redis" in stopped else ""
        _say(f"stopped the services this run started: {', '.join(stopped)}{saved}")
    some_customer = _first_customer(settings, business_date)
    _say(
        "\nhow to look at it:\n"
        "  make serve                                   # the read API on http://127.0.0.1:8000 (docs at /docs)\n"
        f'  curl -H "X-API-Key: {keys["sales"][:14]}..." http://127.0.0.1:8000/v1/customers/{some_customer}/offers\n'
        "     (full keys: cat .crm/demo_api_keys.json)\n"
        "  make airflow                                 # the Airflow UI with this run, on http://localhost:8080\n"
        "  make docs                                    # the warehouse's marts, columns and lineage, on http://127.0.0.1:8081\n"
        "  make evaluate                                # this assignment against the sandbox's truth (oracle, random)\n"
        "  make train                                   # crm_model_training: a new version, champion only if better\n"
        f"  .venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}   # runs, metrics, plots, registry\n"
        f"  .venv/bin/python -c \"import duckdb; print(duckdb.connect('{settings.duckdb_path}', read_only=True)"
        ".sql('select * from marts.customer_campaign_assignments limit 10'))\""
    )
    return 0


def _first_customer(settings: Settings, business_date: dt.date) -> int:

    with connect(settings) as con:
        row = con.execute(
            "select min(customer_id) from marts.customer_campaign_assignments where business_date = ?",
            [business_date],
        ).fetchone()
    return int(row[0] or 1)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from crm.services import ensure_redis, running_services, stop_services_started_since
    from serving.api import create_app

    settings = get_settings()
    before = running_services(settings)
    try:
        url = ensure_redis(settings)
        if not settings.api_keys_path.exists():
            ensure_demo_keys(settings)
        _say(f"read API on http://{args.host}:{args.port} (OpenAPI docs at /docs); keys: {settings.demo_api_keys_path}")
        uvicorn.run(
            create_app(url, settings),
            host=args.host,
            port=args.port,
            log_level="info",
            access_log=False,
        )
    finally:
        stop_services_started_since(before, settings)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from ml.evaluate import evaluate as run_evaluation
    from ml.evaluate import report

    settings = get_settings()
    if args.date:
        business_date = dt.date.fromisoformat(args.date)
    else:
        with connect(settings) as con:
            latest = con.execute("select max(business_date) from marts.customer_campaign_assignments").fetchone()[0]
        if latest is None:
            _say("no assignment in the warehouse yet: run make demo first")
            return 1
        business_date = latest
    print(report(run_evaluation(business_date, args.customers, args.seed, settings)))
    return 0


def airflow_ui(args: argparse.Namespace) -> int:
    from crm.airflow_env import API_PORT, airflow_env, prepare_airflow

    settings = get_settings()
    settings.ensure_dirs()
    prepare_airflow(settings)
    pw = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    _say(f"starting Airflow (airflow standalone) on http://localhost:{API_PORT}")
    _say(f"log in as admin; the password is in {pw} once it has started. Ctrl-C stops it.")
    cmd = [str(Path(sys.executable).parent / "airflow"), "standalone"]
    before = running_services(settings)
    try:
        return subprocess.run(cmd, env=airflow_env(settings), check=False).returncode
    except KeyboardInterrupt:
        return 0
    finally:
        stop_services_started_since(before, settings)


def yesterday_in_lima() -> dt.date:
    """The last complete business day of a Peruvian bank."""
    from zoneinfo import ZoneInfo

    return dt.datetime.now(ZoneInfo("America/Lima")).date() - dt.timedelta(days=1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crm", description="CRM campaign platform")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dbt-parse", help="parse the dbt project into its manifest")
    p = sub.add_parser("demo", help="run crm_daily through Airflow on the sandbox bank")
    p.add_argument("--date", default=yesterday_in_lima().isoformat(), help="business date (default: yesterday)")
    p.add_argument("--customers", type=int, default=5000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--force-publish", action="store_true", help="override the publish guard")
    p = sub.add_parser("train", help="run crm_model_training through Airflow on the demo's warehouse")
    p.add_argument("--date", default=yesterday_in_lima().isoformat(), help="train as of this business date")
    p.add_argument("--customers", type=int, default=5000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--window", type=int, help="training_window_days (default 84)")
    p.add_argument("--candidates", help="comma-separated: logistic_regression,gradient_boosting")
    p.add_argument("--margin", type=float, help="promotion_margin (default 0.005)")
    p = sub.add_parser("serve", help="serve the read API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p = sub.add_parser("sandbox", help="serve the sandbox bank")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--customers", type=int, default=5000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--faults", default="", help='e.g. "server_error=0.05,bad_record=0.01", or "all"')
    sub.add_parser("airflow", help="start the Airflow UI")
    p = sub.add_parser("docs", help="generate and serve the dbt docs site")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--no-serve", action="store_true", help="generate only")
    p = sub.add_parser("evaluate", help="a business date's assignment against the sandbox's truth")
    p.add_argument("--date", help="business date (default: the latest assigned)")
    p.add_argument("--customers", type=int, default=5000, help="the sandbox bank the run extracted (as make demo)")
    p.add_argument("--seed", type=int, default=42)
    p = sub.add_parser("keys", help="issue read-API keys: stores their hashes, prints each key once")
    p.add_argument("--role", action="append", choices=["marketing", "sales", "mobile"], required=True)
    p.add_argument("--file", type=Path, help="the key store (default: CRM_API_KEYS_FILE or .crm/api_keys.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "keys":
        from serving.auth import issue_keys

        store = args.file or get_settings().api_keys_path
        for role, key in issue_keys(store, roles=tuple(args.role)).items():
            print(f"{role}\t{key}")
        print(f"(hashes added to {store}; the keys are not shown again)", file=sys.stderr)
        return 0
    if args.command == "dbt-parse":
        return dbt_parse(get_settings())
    if args.command == "demo":
        return demo(args)
    if args.command == "train":
        return train(args)
    if args.command == "serve":
        return serve(args)
    if args.command == "sandbox":
        from sandbox.__main__ import main as sandbox_main

        sandbox_main(
            [
                "--port",
                str(args.port),
                "--customers",
                str(args.customers),
                "--seed",
                str(args.seed),
                "--faults",
                args.faults,
            ]
        )
        return 0
    if args.command == "airflow":
        return airflow_ui(args)
    if args.command == "evaluate":
        return evaluate(args)
    if args.command == "docs":
        return docs(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
