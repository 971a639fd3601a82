"""The deployment files under docker/, checked without a Docker engine: they parse, and what they
declare exists in the code (commands, modules, endpoints, settings, packages), with no secret in
them."""

from __future__ import annotations

import configparser
import re
import shlex
from types import SimpleNamespace

import yaml

from crm.settings import REPO_ROOT, VARIABLES, get_settings

DOCKER = REPO_ROOT / "docker"
KUBERNETES_VERSION = "1.33"  # OpenShift 4.20's
SECRET_WORDS = re.compile(r"(password|secret|access key|token)", re.IGNORECASE)
INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
    "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _settings_variables() -> set[str]:
    return set(VARIABLES) | set(
        re.findall(r"env_var\('(CRM_[A-Z_]+)'", (REPO_ROOT / "dbt_project" / "profiles.yml").read_text())
    )


def _cli_args(argv: list[str]) -> SimpleNamespace:
    """The command line a container runs (the ``crm`` console script), parsed by the platform's own
    command line: the verb as ``command``, its options by name."""
    from entrypoints.cli import cli

    assert argv[0] == "crm", argv
    verb = cli.commands[argv[1]]
    return SimpleNamespace(command=argv[1], **verb.make_context(argv[1], argv[2:]).params)


def _locked(package: str) -> str:
    return re.search(rf"^{re.escape(package)}==(\S+)$", (REPO_ROOT / "requirements.lock").read_text(), re.MULTILINE)[1]


def test_the_image_is_apache_airflows_own_with_the_lock_and_every_package_added():
    """Built on the apache/airflow image of the locked Airflow version: its entrypoint, user, home and
    log groomer are what the official chart runs (probes, args, mounted airflow.cfg); our lock and
    packages go on top, and the image neither replaces Airflow's entrypoint nor runs as root."""
    steps = _dockerfile()
    assert {word for word, _ in steps} <= INSTRUCTIONS
    args = dict(a.split("=", 1) for w, a in steps if w == "ARG" and "=" in a)
    (base,) = [a for w, a in steps if w == "FROM"]
    assert base == "apache/airflow:slim-${AIRFLOW_VERSION}-python3.11"
    assert args["AIRFLOW_VERSION"] == _locked("apache-airflow"), "the base image is not the locked Airflow"
    runs = " ".join(a for w, a in steps if w == "RUN")
    assert "uv pip install --no-cache -r requirements.lock" in runs and "uv pip check" in runs
    copied = {a.split()[-2].rstrip("/") for w, a in steps if w == "COPY" and "--from" not in a}
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")
    packages = {p.strip() for p in cfg["options.packages.find"]["include"].split() if not p.endswith(".*")}
    assert (packages - {"sandbox"}) | {"dags", "dbt_project"} <= copied
    assert all("--chown=airflow:0" in a for w, a in steps if w == "COPY"), "a file the arbitrary uid cannot write"
    assert [a for w, a in steps if w == "USER"][-1] == "airflow"
    # Airflow's entrypoint and command stay (`airflow <component>` from the chart's args), no
    # HEALTHCHECK every container would inherit (each component has its own)
    assert not [w for w, _ in steps if w in {"ENTRYPOINT", "CMD", "HEALTHCHECK"}]
    env = " ".join(a for w, a in steps if w == "ENV")
    workdir = [a for w, a in steps if w == "WORKDIR"][-1]
    assert f"AIRFLOW__CORE__DAGS_FOLDER={workdir}/dags" in env and "dags" in copied


def test_the_build_sends_what_the_image_copies_and_no_personal_data_or_secret(tmp_path):
    """The build context is the repository's root: what docker/Dockerfile.dockerignore lets through
    (read with the Docker SDK's own .dockerignore matcher) holds every file the image copies, and
    nothing of the data directory, the virtual environment, git, compose's secrets or dbt's output."""
    from docker.utils.build import exclude_paths

    # no parser directive pulling a frontend image (an air-gapped builder has none); one below line 1
    # would be a mere comment
    assert not re.search(r"^#\s*syntax\s*=", (DOCKER / "Dockerfile").read_text(), re.MULTILINE | re.IGNORECASE)
    patterns = [
        line.strip()
        for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # a checkout as a developer's is: data, keys and build output beside the code
    for path in [".crm/landing/customers/business_date=2026-11-27/part-0.parquet", ".crm/keys/signing.pem",
                 ".venv/bin/python", ".git/config", "docker/secrets/redis_password", "dbt_project/target/manifest.json",
                 "dbt_project/logs/dbt.log", "crm/__pycache__/settings.cpython-311.pyc", "tests/conftest.py",
                 "crm/settings/__init__.py", "dbt_project/models/marts/customer_360.sql", "requirements.lock",
                 "setup.cfg", "pyproject.toml", "dags/crm_daily.py"]:  # fmt: skip
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    sent = set(exclude_paths(str(tmp_path), patterns, dockerfile="docker/Dockerfile"))
    assert {"crm/settings/__init__.py", "dbt_project/models/marts/customer_360.sql", "requirements.lock", "setup.cfg",
            "pyproject.toml", "dags/crm_daily.py"} <= sent  # fmt: skip
    leaked = {p for p in sent if p.startswith((".crm", ".venv", ".git", "docker/secrets", "dbt_project/target",
                                               "dbt_project/logs", "tests")) or p.endswith(".pyc")}  # fmt: skip
    assert not leaked
    # and in this checkout, every path the Dockerfile copies from the context is sent
    real = set(exclude_paths(str(REPO_ROOT), patterns, dockerfile="docker/Dockerfile"))
    sources = [
        part
        for word, args in _dockerfile()
        if word == "COPY" and "--from" not in args
        for part in args.split()[:-1]
        if not part.startswith("--")
    ]
    assert len(sources) >= 12
    for source in sources:
        assert source.rstrip("/") in real, f"{source} is copied but not in the build context"


def test_the_image_has_the_sql_server_driver_the_azure_target_loads():
    """CRM_DBT_TARGET=azure: the stages (pyodbc, through SQLAlchemy) and dbt-sqlserver load the ODBC
    driver by its name; the image that runs them installs that driver and unixODBC."""
    from crm.settings import AzureSql

    steps = _dockerfile()
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    runs = " ".join(args for word, args in final if word == "RUN")
    assert "msodbcsql18" in runs and "unixodbc" in runs and "ACCEPT_EULA=Y" in runs
    name = "ODBC Driver 18 for SQL Server"
    assert f"Driver={{{name}}};" in AzureSql("x", "crm", "sql", "u", "p", None, None).odbc_connection_string()
    profile = yaml.safe_load((REPO_ROOT / "dbt_project" / "profiles.yml").read_text())
    assert profile["crm"]["outputs"]["azure"]["driver"] == name


def test_the_image_runs_in_production_without_the_sandbox_bank():
    steps = _dockerfile()
    copied = {args.split()[-2].rstrip("/") for word, args in steps if word == "COPY" and "--from" not in args}
    assert "sandbox" not in copied
    env = " ".join(args for word, args in steps if word == "ENV")
    assert "CRM_ENVIRONMENT=production" in env


def test_the_read_api_replaces_airflows_entrypoint_and_listens_where_the_image_exposes():
    """The image's entrypoint is Airflow's (which would run `airflow crm serve`): compose and the
    OpenShift Deployment both run the read API as the container's whole command line."""
    exposed = {int(port) for w, a in _dockerfile() if w == "EXPOSE" for port in a.split()}
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]["read-api"]
    deployment = next(d for d in yaml.safe_load_all((DOCKER / "openshift" / "read-api.yaml").read_text())
                      if d["kind"] == "Deployment")  # fmt: skip
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for argv in (compose["entrypoint"], container["command"]):
        args = _cli_args(argv)
        assert args.command == "serve" and args.host == "0.0.0.0"  # noqa: S104 - the container listens on its interfaces
        assert args.port in exposed
    assert "command" not in compose and "args" not in container
    metrics = int(next(e["value"] for e in container["env"] if e["name"] == "CRM_METRICS_PORT"))
    assert metrics in exposed and 8080 in exposed  # and Airflow's API server


def _routes() -> set[str]:
    from serving.api import create_app

    return {route.path for route in create_app("redis://unused:6379/0", get_settings()).routes}


def _airflow_parses(argv: list[str]) -> None:
    """An ``airflow ...`` command line, parsed by Airflow's own CLI parser (with the Celery provider's
    commands): a misspelt component fails here, not in the bank's environment."""
    from airflow.cli.cli_parser import get_parser

    assert argv[0] == "airflow", argv
    get_parser().parse_args(argv[1:])


def test_compose_runs_the_api_and_airflow_on_celery_workers_and_a_password_protected_redis():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    airflow = {name for name in services if name.startswith("airflow-")}
    assert set(services) == {"redis", "read-api", "postgres"} | airflow
    assert airflow == {"airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                       "airflow-triggerer", "airflow-worker"}  # fmt: skip
    args = _cli_args(services["read-api"]["entrypoint"])
    assert services["read-api"]["ports"] == [f"{args.port}:{args.port}"]
    env = services["read-api"]["environment"]
    assert env["CRM_REDIS_URL"].startswith("redis://:${CRM_REDIS_PASSWORD")
    assert "--requirepass" in services["redis"]["command"]
    for name in airflow:
        service = services[name]
        airflow_env = service["environment"]
        assert airflow_env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        # the broker and results in the password-protected Redis, beside the cache's database 0
        assert airflow_env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:${CRM_REDIS_PASSWORD")
        assert airflow_env["AIRFLOW__CELERY__BROKER_URL"].endswith("@redis:6379/1")
        assert airflow_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        # Connections encrypted, sessions signed, sign-in by an auth manager the image has
        for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"):
            assert airflow_env[key].startswith("${CRM_AIRFLOW_") and ":?" in airflow_env[key], key
        _importable(airflow_env["AIRFLOW__CORE__AUTH_MANAGER"])
        # the image is production: the warehouse is named (Azure SQL unless told), never the embedded DuckDB
        assert airflow_env["CRM_DBT_TARGET"] == "${CRM_DBT_TARGET:-azure}"
        assert airflow_env["AIRFLOW_CONN_CRM_WAREHOUSE"].startswith("${AIRFLOW_CONN_CRM_WAREHOUSE:?")
        # the landing area, shared by whichever workers extract and load
        assert "crm-data:/var/lib/crm" in service["volumes"]
        if name != "airflow-init":
            _airflow_parses(service["command"])
            assert service["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
            assert service["restart"] == "always"
    # Airflow's entrypoint migrates the database and makes the UI's admin (FAB's) before the command:
    # the warehouse pool, sized for the warehouse; through bash (the entrypoint runs anything else
    # as an `airflow` sub-command)
    init = services["airflow-init"]
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true" and init["environment"]["_AIRFLOW_WWW_USER_CREATE"]
    assert init["environment"]["_AIRFLOW_WWW_USER_PASSWORD"].startswith("${CRM_AIRFLOW_ADMIN_PASSWORD:?")
    assert init["command"][:2] == ["bash", "-c"]
    from entrypoints.cli import cli

    assert shlex.split(init["command"][2]) == ["exec", "crm", "warehouse-pool"] and "warehouse-pool" in cli.commands
    # the worker count is a value of the environment (AIRFLOW_WORKERS), two by default
    assert re.fullmatch(r"\$\{AIRFLOW_WORKERS:-2\}", services["airflow-worker"]["deploy"]["replicas"])
    import psycopg2  # noqa: F401 - the image has the metadata database's driver (from the lock)

    # both call the bank's integration API (the extraction; the mobile app's balances), never a sandbox
    for name in ("read-api", "airflow-worker"):
        assert {"CRM_CORE_API_URL", "CRM_CORE_CLIENT_ID", "CRM_CORE_CLIENT_SECRET"} <= set(
            services[name]["environment"]
        )
    for service in services.values():
        for name, value in (service.get("environment") or {}).items():
            if name.startswith("CRM_"):
                assert name in _settings_variables(), f"{name}: no setting reads it"
            if SECRET_WORDS.search(name) or "@" in str(value):
                assert "${" in str(value), f"{name} holds a literal secret"
    assert "readyz" in " ".join(services["read-api"]["healthcheck"]["test"])
    assert "/readyz" in _routes()


def _importable(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def test_every_compose_service_says_whether_it_is_healthy_with_a_check_of_its_own():
    """No check is inherited from the image; each component's probes what that component serves:
    the API servers a route they have, the scheduler its health server, the DAG processor and the
    triggerer their heartbeat (Airflow's own `jobs check`), a worker its broker."""
    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    for name, service in services.items():
        if name == "airflow-init":  # a job: it completes, the others wait for that
            continue
        test = service["healthcheck"]["test"]
        assert test[0] in {"CMD", "CMD-SHELL"}, name
    probe = {name: " ".join(s["healthcheck"]["test"][1:]) for name, s in services.items() if "healthcheck" in s}
    from airflow.api_fastapi.core_api.routes.public import monitor

    paths = {"/api/v2" + route.path for route in monitor.monitor_router.routes}
    assert re.search(r"127\.0\.0\.1:8080(/\S+)'", probe["airflow-api-server"])[1] in paths
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    from airflow.configuration import conf

    port = conf.getint("scheduler", "scheduler_health_check_server_port")
    assert f"127.0.0.1:{port}/health" in probe["airflow-scheduler"]
    for name, job in (("airflow-dag-processor", "DagProcessorJob"), ("airflow-triggerer", "TriggererJob")):
        argv = shlex.split(probe[name].replace("$$", "$"))
        assert argv[argv.index("--job-type") + 1] == job
        _airflow_parses(argv)
    worker = shlex.split(probe["airflow-worker"])
    assert worker[:3] == ["celery", "--app", "airflow.providers.celery.executors.celery_executor.app"]
    _importable(worker[2].replace(".app", "") + ".app")
    assert services["airflow-worker"]["environment"]["DUMB_INIT_SETSID"] == "0"  # warm shutdown on stop
    assert "readyz" in probe["read-api"] and "pg_isready" in probe["postgres"] and "ping" in probe["redis"]


def test_openshift_runs_the_api_with_probes_and_secrets_it_really_has():
    all_docs = list(yaml.safe_load_all((DOCKER / "openshift" / "read-api.yaml").read_text()))
    docs = {d["kind"]: d for d in all_docs if d["metadata"]["name"] != "crm-console"}
    assert set(docs) == {"Deployment", "Service", "Route", "PersistentVolumeClaim", "PodDisruptionBudget",
                         "NetworkPolicy", "ServiceMonitor"}  # fmt: skip
    # the staff console has a route of its own, on the bank's internal router, to the same service
    (console,) = [d for d in all_docs if d["metadata"]["name"] == "crm-console"]
    assert console["kind"] == "Route" and console["spec"]["path"] == "/console"
    assert console["spec"]["to"]["name"] == docs["Service"]["metadata"]["name"] and console["spec"]["tls"]
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    args = _cli_args(container["command"])
    assert container["ports"][0]["containerPort"] == args.port
    routes = _routes()
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] in routes
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in container["env"]}
    # every variable is one the settings read, but those the manifest itself substitutes ($(NAME))
    substituted = set(re.findall(r"\$\((\w+)\)", (DOCKER / "openshift" / "read-api.yaml").read_text()))
    assert set(env) - substituted <= _settings_variables() and substituted <= set(env)
    assert "secretKeyRef" in env["CRM_REDIS_URL"]["valueFrom"]  # the URL holds the access key
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert env["CRM_API_KEYS_FILE"]["value"].rsplit("/", 1)[0] in mounts
    # bearer tokens are verified against the bank's identity provider (production has no dev key)
    for var in ("CRM_JWT_JWKS_URL", "CRM_JWT_ISSUER", "CRM_JWT_AUDIENCE"):
        assert "configMapKeyRef" in env[var]["valueFrom"], var
    # production's API does not start without the bank's integration API (the mobile app's balances)
    assert "secretKeyRef" in env["CRM_CORE_CLIENT_SECRET"]["valueFrom"] and "CRM_CORE_API_URL" in env
    # the audit trail's key is a mounted Secret, not on the trail's volume; forwarded addresses are
    # believed from the router's only
    key_dir = env["CRM_AUDIT_KEY_FILE"]["value"].rsplit("/", 1)[0]
    (key_mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == key_dir]
    volumes = {v["name"]: v for v in docs["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert "secret" in volumes[key_mount["name"]] and key_mount["readOnly"]
    assert "configMapKeyRef" in env["CRM_TRUSTED_PROXIES"]["valueFrom"]
    assert docs["Route"]["spec"]["tls"]["termination"] == "edge"
    # the public route reaches the business calls only; the scraper the internal metrics port
    assert docs["Route"]["spec"]["path"] == "/v1"
    metrics_port = int(env["CRM_METRICS_PORT"]["value"])
    pod = docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert int(pod["prometheus.io/port"]) == metrics_port and pod["prometheus.io/path"] == "/metrics"
    assert {p["containerPort"] for p in container["ports"]} == {args.port, metrics_port}


def test_the_read_api_is_hardened_scraped_fenced_and_keeps_its_audit_trail():
    """What a platform team asks of a pod before it runs in the bank's cluster: probes that tell a slow
    start from a dead process, both replicas never drained at once and spread over nodes, the API port
    from the routers only and the metrics port from the monitoring stack only (which scrapes what a
    ServiceMonitor names), and an audit trail on a volume that outlives the pods."""
    docs = {d["kind"]: d for d in yaml.safe_load_all((DOCKER / "openshift" / "read-api.yaml").read_text())}
    deployment, service = docs["Deployment"], docs["Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["startupProbe"]["httpGet"]["path"] in _routes()
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 30
    budget = docs["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= budget["minAvailable"] < deployment["spec"]["replicas"]
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} >= {"kubernetes.io/hostname"}
    # the Service names the metrics port; the ServiceMonitor scrapes it by that name
    (scraped,) = docs["ServiceMonitor"]["spec"]["endpoints"]
    assert docs["ServiceMonitor"]["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert by_name[scraped["port"]]["targetPort"] == "metrics" and scraped["path"] == "/metrics"
    # ingress: each port from one group of namespaces, nothing else
    policy = docs["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items() and policy["policyTypes"] == ["Ingress"]
    allowed = {
        tuple(rule["from"][0]["namespaceSelector"]["matchLabels"].items()): {p["port"] for p in rule["ports"]}
        for rule in policy["ingress"]
        if len(rule["from"]) == 1
    }
    assert len(allowed) == len(policy["ingress"])
    # OpenShift's documented labels: the ingress controllers' namespaces, the monitoring stack's
    assert allowed == {
        (("policy-group.network.openshift.io/ingress", ""),): {ports["http"]},
        (("network.openshift.io/policy-group", "monitoring"),): {ports["metrics"]},
    }
    # the trail: CRM_AUDIT_DIR on a claim, not on an emptyDir lost with the pod
    env = {e["name"]: e.get("value") for e in container["env"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == env["CRM_AUDIT_DIR"]]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert docs["PersistentVolumeClaim"]["metadata"]["name"] == claim
    assert docs["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]  # both replicas write
    # each pod in a directory of its own: its chain of seals is never another pod's
    pod_name = next(e for e in container["env"] if e["name"] == "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"]
    assert pod_name == "metadata.name" and mount["subPathExpr"] == "$(POD_NAME)"


def test_the_alert_rules_watch_metrics_the_read_api_exports():
    """The PrometheusRule pages on a stale or missing snapshot, server errors and quota refusals, each
    from a metric (and label) the API's /metrics really exports: a renamed metric would silence it."""
    from prometheus_client import generate_latest

    from serving.hotpath import Metrics

    (rule_file,) = yaml.safe_load_all((DOCKER / "openshift" / "alerts.yaml").read_text())
    assert (rule_file["apiVersion"], rule_file["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    rules = {r["alert"]: r for group in rule_file["spec"]["groups"] for r in group["rules"]}
    assert set(rules) == {"CrmSnapshotStale", "CrmNoLiveSnapshot", "CrmApiErrors", "CrmQuotaRefusals"}
    metrics = Metrics()
    metrics.requests.labels(endpoint="/v1/customers/{customer_id}/offers", method="GET", status="429").inc()
    metrics.note_snapshot(None)
    exported = generate_latest(metrics.registry).decode()
    names = set(re.findall(r"^# TYPE (\S+) (\w+)", exported, re.MULTILINE))
    series = {name for name, kind in names} | {f"{name}_total" for name, kind in names if kind == "counter"}
    for alert, rule in rules.items():
        used = set(re.findall(r"\b(crm_[a-z_]+)\b", rule["expr"]))
        assert used and used <= series, f"{alert}: {used - series}"
        for label in re.findall(r"(\w+)=~?\"", rule["expr"]) + re.findall(r"by \((\w+)\)", rule["expr"]):
            assert f'{label}="' in exported, f"{alert}: label {label}"
        assert rule["labels"]["severity"] in {"warning", "critical"} and rule["annotations"]["summary"], alert
        # a label the scrape sets itself (endpoint, job, pod, ...) is the API's only with honorLabels
        if {"endpoint", "job", "instance", "namespace", "service", "pod", "container"} & set(
            re.findall(r"(\w+)!?=~?\"", rule["expr"]) + re.findall(r"by \((\w+)\)", rule["expr"])
        ):
            monitor = next(d for d in yaml.safe_load_all((DOCKER / "openshift" / "read-api.yaml").read_text())
                           if d["kind"] == "ServiceMonitor")  # fmt: skip
            assert all(e.get("honorLabels") for e in monitor["spec"]["endpoints"]), alert
    # stale: later than a day's run can be late, yet before the snapshot's TTL runs out twice
    stale = re.search(r"> (\d+) \* 3600", rules["CrmSnapshotStale"]["expr"])
    assert (
        get_settings().serving.snapshot_ttl_hours < int(stale.group(1)) < 2 * get_settings().serving.snapshot_ttl_hours
    )


def _pod_specs():
    """Every pod spec in the Kubernetes manifests we write, with where it is."""
    for path in sorted((DOCKER / "openshift").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "apiVersion" in doc and doc.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
                yield f"{path.name}: {doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def _admitted_pod(pod: dict, where: str) -> None:
    """restricted-v2 on a pod's securityContext: not root, the runtime's seccomp profile, no group 0."""
    assert pod.get("runAsNonRoot") is True, where
    assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
    assert 0 not in [
        pod.get("fsGroup"),
        pod.get("runAsGroup"),
        pod.get("runAsUser"),
        *pod.get("supplementalGroups", []),
    ], where


def _admitted_container(context: dict, where: str) -> None:
    assert context.get("allowPrivilegeEscalation") is False, where
    assert context.get("capabilities", {}).get("drop") == ["ALL"], where
    assert not context.get("capabilities", {}).get("add"), where
    assert context.get("privileged") is not True and context.get("runAsUser") != 0, where
    assert context.get("runAsGroup") != 0, where


def test_every_pod_we_write_runs_as_openshifts_restricted_scc_admits():
    """restricted-v2: not root, no privilege escalation, every capability dropped, the runtime's
    seccomp profile; and no group 0 (fsGroup, runAsGroup, supplementalGroups), which it refuses."""
    specs = list(_pod_specs())
    assert specs
    for where, spec in specs:
        _admitted_pod(spec.get("securityContext", {}), where)
        for container in spec["containers"] + spec.get("initContainers", []):
            _admitted_container(container.get("securityContext", {}), f"{where} {container['name']}")


def test_every_pod_the_chart_renders_from_our_values_runs_as_restricted_v2_admits():
    """The chart's pods take their security context from our values: an Airflow pod from its
    component's `securityContexts`, else the global one, else `runAsUser: uid` and `fsGroup: gid`
    (0 by default, which restricted-v2 refuses); its Redis and StatsD from their own only (Redis runs
    as uid 0 unless told). So: the global contexts admitted, Redis's and StatsD's set and admitted,
    and any component's own admitted too."""
    values = yaml.safe_load((DOCKER / "openshift" / "airflow-values.yaml").read_text())
    _admitted_pod(values["securityContexts"]["pod"], "securityContexts.pod")
    _admitted_container(values["securityContexts"]["containers"], "securityContexts.containers")
    for local in ("redis", "statsd"):  # rendered from their own values only
        if values.get(local, {}).get("enabled", True):
            _admitted_pod(values[local]["securityContexts"]["pod"], f"{local}.securityContexts.pod")
            _admitted_container(values[local]["securityContexts"]["container"], f"{local}.securityContexts.container")
    for name, component in values.items():
        if isinstance(component, dict) and name not in {"securityContexts", "redis", "statsd"}:
            contexts = component.get("securityContexts", {})
            if contexts.get("pod"):
                _admitted_pod(contexts["pod"], f"{name}.securityContexts.pod")
            if contexts.get("container"):
                _admitted_container(contexts["container"], f"{name}.securityContexts.container")
            assert "securityContext" not in component, f"{name}: the chart's retired key"
    assert values.get("gid", 1) != 0 and values.get("uid", 1) != 0


def test_every_kubernetes_manifest_we_ship_validates_against_the_kubernetes_schemas():
    """Offline, against the schemas of the Kubernetes release OpenShift 4.20 runs (kubernetes-validate
    ships them), strictly: a misspelt or misplaced field fails. The kinds that are OpenShift's and
    the Prometheus operator's own (Route, ServiceMonitor, PrometheusRule) have no schema there: their
    fields are checked by the tests above."""
    import kubernetes_validate

    own_kinds = {
        ("route.openshift.io/v1", "Route"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    }
    validated = 0
    for path in sorted((DOCKER / "openshift").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or "apiVersion" not in doc or (doc["apiVersion"], doc["kind"]) in own_kinds:
                continue
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                raise AssertionError(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {error.message}") from None
            validated += 1
    assert validated >= 5


def test_airflow_values_run_the_image_with_connections_from_a_secret():
    values = yaml.safe_load((DOCKER / "openshift" / "airflow-values.yaml").read_text())
    # Celery workers, as many as the value says, on the chart's Redis; the landing area shared
    assert values["executor"] == "CeleryExecutor"
    replicas = values["workers"]["celery"]["replicas"]
    assert isinstance(replicas, int) and replicas >= 2
    assert values["redis"]["enabled"] is True
    assert values["images"]["airflow"]["repository"].endswith("crm-platform")
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["CRM_DBT_TARGET"] == "azure"
    (mount,) = values["volumeMounts"]
    assert mount["mountPath"] == env["CRM_HOME"]
    assert {v["name"]: v for v in values["volumes"]}[mount["name"]]["persistentVolumeClaim"]["claimName"]
    assert set(n for n in env if n.startswith("CRM_")) <= _settings_variables()
    assert isinstance(values["extraEnvFrom"], str) and "secretRef" in values["extraEnvFrom"]  # the chart's type
    text = (DOCKER / "openshift" / "airflow-values.yaml").read_text()
    # the connection ids the settings module reads are the ones the secret is told to hold
    systems = (REPO_ROOT / "crm" / "settings" / "systems.py").read_text()
    for conn_id in re.findall(r"airflow_connection\(\"([a-z_]+)\"\)", systems):
        assert f"AIRFLOW_CONN_{conn_id.upper()}=" in text
    assert all(not SECRET_WORDS.search(str(v)) for v in env.values())
    # the warehouse pool is made at deploy time, after the migration, by the job that has the env
    job = values["migrateDatabaseJob"]
    assert job.get("applyCustomEnv", True) is True
    script = job["args"][-1]
    assert job["args"][:2] == ["bash", "-c"] and re.fullmatch(
        r"airflow db migrate && (exec )?crm warehouse-pool", script
    )


def _secret_made(name: str, key: str) -> bool:
    """The values' instructions make this Secret with this key (`oc create secret generic NAME
    --from-literal=KEY=...`, up to the next command or the end of the comment)."""
    header = (DOCKER / "openshift" / "airflow-values.yaml").read_text().split("\n\n")[0]
    commands = re.split(r"\boc create secret generic ", header)[1:]
    return any(
        command.split()[0] == name and re.search(rf"--from-literal={re.escape(key)}=", command.split("\n#   oc ")[0])
        for command in commands
    )


def test_airflow_values_name_a_secret_for_every_key_the_chart_needs_and_keep_no_database_inside():
    """Left unnamed, the chart generates the Fernet key, the API's secret key and the JWT secret at
    install (a new one at each reinstall: Connections no longer decrypt, sessions and task tokens die)
    and runs its embedded PostgreSQL, "not for production". Each is a Secret made before the install,
    with the key the chart reads from it."""
    values = yaml.safe_load((DOCKER / "openshift" / "airflow-values.yaml").read_text())
    assert values["postgresql"]["enabled"] is False
    named = {
        values["data"]["metadataSecretName"]: "connection",
        values["data"]["brokerUrlSecretName"]: "connection",
        values["fernetKeySecretName"]: "fernet-key",
        values["apiSecretKeySecretName"]: "api-secret-key",
        values["jwtSecretName"]: "jwt-secret",
        values["redis"]["passwordSecretName"]: "password",
    }
    assert len(named) == 6  # six Secrets, none shared
    for name, key in named.items():
        assert _secret_made(name, key), f"no instruction makes Secret {name} with key {key}"


def test_the_deployment_pins_airflow_and_runs_one_immutable_image():
    """The chart renders for the locked Airflow (the image's base); every manifest runs the image by
    setup.cfg's version, never `latest` (a moved tag: two pods of one Deployment on two builds)."""
    values = yaml.safe_load((DOCKER / "openshift" / "airflow-values.yaml").read_text())
    assert values["airflowVersion"] == _locked("apache-airflow")
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")
    version = cfg["metadata"]["version"]
    assert values["images"]["airflow"]["tag"] == version
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    images = [compose["x-platform"]["image"]] + [
        c["image"]
        for d in yaml.safe_load_all((DOCKER / "openshift" / "read-api.yaml").read_text())
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert images and all(image == f"crm-platform:{version}" for image in images), images
    assert "latest" not in " ".join(p.read_text() for p in DOCKER.rglob("*.yaml")).replace("latest live", "")


def test_sign_in_to_airflow_is_fabs_through_the_banks_identity_provider():
    """The auth manager the values name is installed (the FAB provider is in the lock) and its
    webserver_config signs people in through Entra ID only: no user the chart would create with a
    known password, roles from the token's app roles, nothing for a person with none."""
    from flask_appbuilder.security.manager import AUTH_OAUTH

    values = yaml.safe_load((DOCKER / "openshift" / "airflow-values.yaml").read_text())
    manager = _importable(values["config"]["core"]["auth_manager"])
    assert manager.__name__ == "FabAuthManager"
    # what FAB's OAuth sign-in imports when the API server starts (the provider's `oauth` extra)
    _importable("authlib.integrations.flask_client.OAuth")
    # behind the route's TLS termination: redirect URIs built as https, as Entra ID requires
    assert values["config"]["fab"]["enable_proxy_fix"] == "True"
    assert values["createUserJob"]["enabled"] is False
    source = values["apiServer"]["apiServerConfig"]
    read = set(re.findall(r"os\.environ\[\"(\w+)\"\]", source))
    assert read and all(_secret_made("crm-airflow-connections", name) for name in read), read
    config: dict = {}
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, {name: f"<{name}>" for name in read}):
        exec(compile(source, "webserver_config.py", "exec"), config)  # noqa: S102 - our own file, as FAB runs it
    assert config["AUTH_TYPE"] == AUTH_OAUTH and config["AUTH_ROLES_SYNC_AT_LOGIN"] is True
    assert config["AUTH_USER_REGISTRATION_ROLE"] == "Public"
    assert set(r for roles in config["AUTH_ROLES_MAPPING"].values() for r in roles) <= {"Admin", "Op", "User", "Viewer"}
    (provider,) = config["OAUTH_PROVIDERS"]
    assert provider["name"] == "azure"  # FAB validates the id_token's signature for this provider name
    urls = [v for k, v in provider["remote_app"].items() if k.endswith("_url") and v]
    assert all(u.startswith("https://login.microsoftonline.com/<AIRFLOW_OAUTH_TENANT_ID>/") for u in urls), urls
    # with the openid scope authlib checks the id_token's nonce and signature against the tenant's
    # keys, which it finds in the OpenID metadata only
    assert "openid" in provider["remote_app"]["client_kwargs"]["scope"].split()
    assert provider["remote_app"]["server_metadata_url"].endswith("/v2.0/.well-known/openid-configuration")
    assert provider["remote_app"]["client_kwargs"]["verify_signature"] is True


def test_the_chart_values_check_refuses_what_helm_would_ignore_or_reject(tmp_path):
    """`crm check-chart-values` (run by the bank's pipeline against the chart release it installs):
    on a chart laid out as the official one is (an open top level, closed nested objects, $refs to
    definitions), a misspelt key anywhere, a wrong type and a retired top-level key are each named;
    our values' own key paths pass on a schema that defines them."""
    from click.testing import CliRunner

    from entrypoints.chart_values import chart_values_errors, chart_values_warnings, coalesce
    from entrypoints.cli import cli

    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "uid": {"type": "integer"},
            "executor": {"type": "string"},
            "config": {"type": "object", "additionalProperties": {"type": "object"}},
            "workers": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"celery": {"type": "object", "properties": {"replicas": {"type": ["integer", "null"]}}}},
            },
            # open (no additionalProperties): a key it does not list may still be one the templates read
            "securityContexts": {"type": "object", "properties": {"pod": {"$ref": "#/definitions/podContext"}}},
        },
        "definitions": {
            "podContext": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"runAsNonRoot": {"type": "boolean"}},
            }
        },
    }
    chart = tmp_path / "airflow"
    chart.mkdir()
    (chart / "values.schema.json").write_text(__import__("json").dumps(schema))
    (chart / "values.yaml").write_text("uid: 50000\nexecutor: CeleryExecutor\nworkers: {celery: {replicas: 1}}\n")
    good = tmp_path / "good.yaml"
    good.write_text("executor: CeleryExecutor\nworkers: {celery: {replicas: 2}}\nconfig: {core: {auth_manager: x}}\n"
                    "securityContexts: {pod: {runAsNonRoot: true}, containers: {}}\nuid: null\n")  # fmt: skip
    assert chart_values_errors(chart, good) == []
    assert chart_values_warnings(chart, good) == ["securityContexts.containers: not listed by the chart's schema"]
    assert "uid" not in coalesce({"uid": 50000}, {"uid": None})  # null removes the chart's default
    bad = tmp_path / "bad.yaml"
    bad.write_text("webserver: {defaultUser: {enabled: false}}\nworkers: {replicas: 2, celery: {replicas: two}}\n"
                   "securityContexts: {pod: {runAsUser: 0}}\nuid: 'x'\n")  # fmt: skip
    errors = chart_values_errors(chart, bad)
    for fault in ("webserver: not a value", "workers.replicas: not a value", "securityContexts.pod.runAsUser: not a value",
                  "workers.celery.replicas: 'two' is not of type", "uid: 'x' is not of type"):  # fmt: skip
        assert any(e.startswith(fault) for e in errors), (fault, errors)
    result = CliRunner().invoke(cli, ["check-chart-values", "--chart", str(chart), "--values", str(bad)])
    assert result.exit_code == 1 and "bad.yaml: webserver: not a value the chart defines" in result.output
    result = CliRunner().invoke(cli, ["check-chart-values", "--chart", str(chart), "--values", str(good)])
    assert result.exit_code == 0, result.output


def test_no_deployment_file_carries_a_credential():
    for path in DOCKER.rglob("*"):
        if path.is_file():
            for line in path.read_text().splitlines():
                code = line.split("#", 1)[0]
                assert not re.search(r"rediss?://:[^$<{\s]", code), f"{path.name}: {line.strip()}"
                assert not re.search(r"(?i)(password|secret)\s*[:=]\s*['\"]?[A-Za-z0-9]{6,}", code), line
