"""``crm`` (or ``python -m entrypoints.cli``): the commands behind the Makefile's verbs.

Each verb is a few lines that call into the package that owns the work; ``crm --help`` and
``crm VERB --help`` list them and their options.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import subprocess
import sys
from pathlib import Path

import click

from crm.settings import REPO_ROOT, get_settings, private_files, yesterday_in_lima
from entrypoints.cli_security import COMMANDS


class _Date(click.ParamType):
    name = "YYYY-MM-DD"

    def convert(self, value, param, ctx) -> dt.date:
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a date (YYYY-MM-DD)", param, ctx)


DATE = _Date()


def _done(code: int) -> None:
    """End the command with ``code`` (what make and the tests read)."""
    if code:
        raise SystemExit(code)


def _date_option(help_text: str):
    """``--date``: a business date, yesterday in Lima when left out."""
    return click.option("--date", "business_date", type=DATE, default=yesterday_in_lima,
                        show_default="yesterday in Lima", help=help_text)  # fmt: skip


def _bank_options(fn):
    """``--customers`` and ``--seed``: the sandbox bank a run extracts (as make demo's)."""
    fn = click.option("--seed", type=int, default=42, show_default=True, help="the sandbox bank's seed")(fn)
    return click.option("--customers", type=int, default=5000, show_default=True, help="sandbox customers")(fn)


@click.group(help="CRM campaign platform: the verbs behind the Makefile.", context_settings={"show_default": True})
def cli() -> None:
    pass


@cli.command("dbt-parse")
def dbt_parse() -> None:
    """Parse the dbt project into target/manifest.json (what Cosmos renders the DAG from)."""
    from crm.warehouse import dbt_command

    _done(dbt_command(get_settings(), "parse", "--quiet"))


@cli.command()
@_date_option("business date")
@_bank_options
@click.option("--force-publish", is_flag=True, help="override the publish guard")
def demo(business_date: dt.date, customers: int, seed: int, force_publish: bool) -> None:
    """Run crm_daily through Airflow on the sandbox bank and say what it made."""
    from entrypoints.runs import demo as run_demo

    _done(run_demo(business_date, customers, seed, force_publish))


@cli.command()
@click.option("--from", "first", type=DATE, required=True, help="the first business date")
@click.option("--to", "last", type=DATE, required=True, help="the last business date")
@_bank_options
@click.option("--max-active-runs", type=int, default=3, help="dates run side by side")
def backfill(first: dt.date, last: dt.date, customers: int, seed: int, max_active_runs: int) -> None:
    """Backfill crm_daily through Airflow for the dates FROM..TO and say how each went."""
    from entrypoints.runs import backfill as run_backfill

    if last < first:
        raise click.BadParameter(f"--to {last} is before --from {first}", param_hint="--to")
    _done(run_backfill(first, last, customers, seed, max_active_runs))


@cli.command()
@_date_option("train as of this date")
@_bank_options
@click.option("--window", type=int, help="training_window_days (default 84)")
@click.option("--candidates", help="comma-separated: logistic_regression,gradient_boosting,per_campaign_logistic")
@click.option("--margin", type=float, help="promotion_margin (default 0.005)")
def train(business_date: dt.date, customers: int, seed: int, window, candidates, margin) -> None:
    """Run crm_model_training through Airflow on the demo's warehouse and say what it decided."""
    from entrypoints.runs import train as run_training

    overrides = {"training_window_days": window, "promotion_margin": margin}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if candidates:
        overrides["candidates"] = candidates.split(",")
    _done(run_training(business_date, customers, seed, overrides))


def _stop_on_sigterm() -> None:
    """SIGTERM (OpenShift stopping the pod, ``kill``) ends the command as Ctrl-C does: through its
    ``finally``, which stops the services it started. (uvicorn re-raises the signal it caught once
    it has shut down; with the default handler that would kill the process on the spot.)"""
    import signal

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


@cli.command()
@click.option("--host", default="127.0.0.1")
@click.option("--port", type=int, default=8000)
def serve(host: str, port: int) -> None:
    """Serve the read API on the cache (starting the embedded Redis when it is not running)."""
    import logging

    import uvicorn

    from crm.services import ensure_redis, running_services, stop_services_started_since
    from serving.api import create_app
    from serving.auth import ensure_demo_keys

    _stop_on_sigterm()
    settings = get_settings()
    before = running_services(settings)
    try:
        url = ensure_redis(settings)
        if not settings.production and not settings.api_keys_path.exists():
            ensure_demo_keys(settings)  # production never makes a key: create_app refuses a missing store
        app = create_app(url, settings)
        # the audit trail's seals go to the log (stderr), which the deployment ships off the host
        seals = logging.getLogger("crm.audit")
        seals.setLevel(logging.INFO)
        seals.addHandler(logging.StreamHandler())
        docs = "" if settings.production else " (OpenAPI docs at /docs)"
        keys = "" if settings.production else f"; keys: {settings.demo_api_keys_path}"
        click.echo(f"read API on http://{host}:{port}{docs}{keys}")
        # X-Forwarded-For and -Proto are believed from the configured router only (none by default)
        proxies = [p.strip() for p in settings.serving.trusted_proxies.split(",") if p.strip()]
        config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                                proxy_headers=bool(proxies), forwarded_allow_ips=proxies or "")  # fmt: skip
        sockets = [config.bind_socket()]
        if settings.metrics_port:  # one server, two listening sockets: the app tells them apart
            click.echo(f"metrics on http://{host}:{settings.metrics_port}/metrics only")
            sockets.append(uvicorn.Config(app, host=host, port=settings.metrics_port).bind_socket())
        uvicorn.Server(config).run(sockets=sockets)
    finally:
        stop_services_started_since(before, settings)


@cli.command()
@click.option("--port", type=int, default=8000)
@_bank_options
@click.option("--faults", default="", help='e.g. "server_error=0.05,bad_record=0.01", or "all"')
def sandbox(port: int, customers: int, seed: int, faults: str) -> None:
    """Serve the sandbox bank on its own."""
    from sandbox.__main__ import main as sandbox_main

    sandbox_main(["--port", str(port), "--customers", str(customers), "--seed", str(seed), "--faults", faults])


@cli.command()
@click.option("--executor", type=click.Choice(["local", "celery"]), default="local", show_default=True,
              help="local: airflow standalone; celery: CeleryExecutor with --workers workers on the embedded Redis")  # fmt: skip
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Celery workers")
@click.option("--concurrency", type=click.IntRange(min=1), default=2, show_default=True, help="task slots per worker")
def airflow(executor: str, workers: int, concurrency: int) -> None:
    """Start Airflow on the project's DAGs (the UI on http://localhost:8080) until Ctrl-C."""
    from crm.airflow_env import API_PORT, LocalAirflow
    from crm.services import running_services, stop_services_started_since

    settings = get_settings()
    before = running_services(settings)
    local = LocalAirflow(settings, executor, workers, concurrency)
    pw = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    what = "airflow standalone" if executor == "local" else f"CeleryExecutor, {workers} workers x {concurrency} slots"
    print(f"starting Airflow ({what}) on http://localhost:{API_PORT}", flush=True)
    try:
        local.start()
        print(f"Airflow is up: log in as admin; the password is in {pw}. Ctrl-C stops it.", flush=True)
        print(f"logs: {local.log_path('<component>')}", flush=True)
        _done(local.wait())
    finally:
        local.stop()
        stop_services_started_since(before, settings)


@cli.command()
@click.option("-c", "--command", "command", help="run this one statement, print its rows and exit")
@click.option("--csv", "as_csv", is_flag=True, help="rows as CSV, an empty line after each result")
@click.option("--max-rows", type=click.IntRange(min=1), default=1000, help="rows shown of a result (not with --csv)")
def sql(command: str | None, as_csv: bool, max_rows: int) -> None:
    """Query the marts as an analyst: statements from standard input (each ended by ';'), or one
    with -c. On DuckDB it reads the copy each run publishes (never the file a run writes); on a
    server it connects as the analysts' role (CRM_ANALYST_ROLE), which reads marts, snapshots and
    campaigns only. An embedded PostgreSQL it starts stays up when it ends: a run may be using it
    (make demo WAREHOUSE=postgres stops the services it started)."""
    from serving.analysts import AnalystsError
    from serving.analysts_shell import shell

    try:
        _done(shell(get_settings(), command, as_csv, max_rows))
    except AnalystsError as error:
        raise click.ClickException(str(error)) from None


@cli.command("publish-analysts")
@_date_option("the business date whose run it completes")
@click.option("--all", "everything", is_flag=True, help="every date the warehouse holds (when no run is writing)")
def publish_analysts(business_date: dt.date, everything: bool) -> None:
    """Bring the analysts' copy of the DuckDB warehouse up to date now: crm_daily does it for its
    date after each run; --all takes every date, after the warehouse was changed by hand (a dbt
    build outside Airflow, a full refresh)."""
    from serving.analysts import publish

    done = publish(get_settings(), business_date, everything=everything)
    click.echo(", ".join(f"{k}={v}" for k, v in done.items()))


@cli.command("warehouse-pool")
def warehouse_pool() -> None:
    """Create or resize the Airflow pool crm_warehouse for this deployment's warehouse (one slot on
    DuckDB, CRM_WAREHOUSE_POOL_SLOTS on a server): run where `airflow` reaches the metadata database."""
    from crm.airflow_env import warehouse_pool_description
    from crm.settings import WAREHOUSE_POOL

    settings = get_settings()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "pools", "set", WAREHOUSE_POOL,
         str(settings.warehouse_pool_slots), warehouse_pool_description(settings)],
        check=False,
    )  # fmt: skip
    _done(done.returncode)


@cli.command("check-chart-values")
@click.option(
    "--chart",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="the official Airflow chart, unpacked (helm pull apache-airflow/airflow --version V --untar)",
)
@click.option(
    "--values",
    "values_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=REPO_ROOT / "docker" / "openshift" / "airflow-values.yaml",
    show_default="ours",
)
def check_chart_values(chart: Path, values_file: Path) -> None:
    """Check our Helm values against the chart's values.schema.json: every key one the chart defines,
    and the merged values valid. Exits 1 naming each fault."""
    from entrypoints.chart_values import check

    errors, warnings = check(chart, values_file)
    for warning in warnings:
        click.echo(f"{values_file.name}: warning: {warning}", err=True)
    for error in errors:
        click.echo(f"{values_file.name}: {error}", err=True)
    if not errors:
        click.echo(f"{values_file.name}: valid for the chart in {chart}")
    _done(1 if errors else 0)


DOCS_INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>CRM platform: data docs</title></head>
<body><main><h1>CRM platform: data docs</h1><ul>
<li><a href="dbt/index.html">The warehouse's models</a>: dbt's docs of every model, column, test and their lineage</li>
<li><a href="data-quality/index.html">Data quality</a>: Great Expectations' Data Docs of every gate's validation, by date</li>
</ul></main></body></html>
"""


@cli.command()
@click.option("--port", type=int, default=8081)
@click.option("--no-serve", is_flag=True, help="generate only")
def docs(port: int, no_serve: bool) -> None:
    """dbt's docs of the marts and Great Expectations' Data Docs of every gate, served for analysts."""
    from crm.warehouse import dbt_docs
    from expectations import data_docs

    settings = get_settings()
    root = settings.home / "docs"
    code = dbt_docs(settings, root / "dbt")
    if code:
        _done(code)
    data_docs.build(settings)
    (root / "index.html").write_text(DOCS_INDEX)
    click.echo(f"docs in {root}: dbt's in dbt/, the gates' Data Docs in data-quality/")
    if no_serve:
        return
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        click.echo(f"docs on http://127.0.0.1:{port} (Ctrl-C stops it)")
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


@cli.command()
@click.option("--date", "business_date", type=DATE, show_default="the latest assigned", help="business date")
@_bank_options
def evaluate(business_date: dt.date | None, customers: int, seed: int) -> None:
    """A business date's assignment against the sandbox's truth (oracle, random)."""
    from ml.evaluate import evaluate as run_evaluation
    from ml.evaluate import latest_assigned_date, report

    settings = get_settings()
    business_date = business_date or latest_assigned_date(settings)
    if business_date is None:
        click.echo("no assignment in the warehouse yet: run make demo first")
        _done(1)
    click.echo(report(run_evaluation(business_date, customers, seed, settings)))


@cli.command("config-table")
@click.option("--write", is_flag=True, help="rewrite the README's table between its config-table markers")
@click.option("--readme", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="the file to rewrite [README.md of the checkout]")  # fmt: skip
def config_table(write: bool, readme: Path | None) -> None:
    """The configuration table (every CRM_* variable, its default, what it sets), generated from the
    declarations in crm/settings.py: printed, or with --write put into the README."""
    from crm.settings import config_table as table
    from crm.settings import with_config_table

    if not write:
        click.echo(table(), nl=False)
        return
    path = readme or REPO_ROOT / "README.md"
    before = path.read_text()
    try:
        after = with_config_table(before)
    except ValueError as error:
        raise click.ClickException(f"{path}: {error}") from None
    if after != before:
        path.write_text(after)
    click.echo(f"{path}: the configuration table is {'rewritten' if after != before else 'already up to date'}")


for command in COMMANDS:
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """The ``crm`` console script. A setting at fault ends it with one line that names it (no
    traceback): what an operator reads when production refuses to start."""
    from crm.settings import SettingsError

    private_files()
    try:
        cli.main(args=argv, prog_name="crm", standalone_mode=False)
    except SettingsError as error:
        click.echo(f"crm: {' '.join(str(error).split())}", err=True)
        return 2
    except SystemExit as done:
        return int(done.code or 0)
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.exceptions.Abort:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
