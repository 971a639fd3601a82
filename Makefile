# The verbs of the CRM platform. Everything sets itself up: the first target you run creates
# .venv from requirements.lock. All local state lives in $(CRM_HOME) (default .crm/).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export CRM_HOME ?= $(CURDIR)/.crm
export PATH := $(CURDIR)/$(BIN):$(PATH)
# no usage telemetry leaves the machine (Cosmos, MLflow, GX, dbt): banks run air-gapped
export DO_NOT_TRACK := 1
export SCARF_NO_ANALYTICS := true
export AIRFLOW__COSMOS__ENABLE_TELEMETRY := False
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export DBT_SEND_ANONYMOUS_USAGE_STATS := false

DATE ?=
# the warehouse every verb uses: duckdb (embedded, the default), postgres (an embedded PostgreSQL
# server, or CRM_POSTGRES_HOST's) or azure (CRM_AZURE_SQL_*): sets CRM_DBT_TARGET
WAREHOUSE ?=
ifneq ($(WAREHOUSE),)
export CRM_DBT_TARGET := $(if $(filter duckdb,$(WAREHOUSE)),local,$(WAREHOUSE))
endif
CUSTOMERS ?= 5000
PORT ?= 8000
SEED ?= 42
FAULTS ?=
DOCS_PORT ?= 8081
CHROMIUM ?= /usr/bin/chromium

STAMP := $(VENV)/.installed-$(shell cat requirements.lock setup.cfg | cksum | cut -d' ' -f1)
MANIFEST := dbt_project/target/manifest.json
DBT_SOURCES := $(shell find dbt_project -type f \( -name '*.sql' -o -name '*.yml' -o -name '*.csv' \) -not -path '*/target/*' -not -path '*/logs/*' 2>/dev/null)

.PHONY: postgres-programs help setup demo backfill serve sandbox airflow test test-unit lint format lock clean bench bench-report bench-serving bench-extract bench-dbt bench-scoring bench-backfill bench-daily bench-daily-postgres bench-loop evaluate docs train sql

help:  ## list the verbs
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

$(STAMP): requirements.lock setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@rm -f $(VENV)/.installed-*; touch $@

$(MANIFEST): $(STAMP) $(DBT_SOURCES)
	$(BIN)/crm dbt-parse

setup: $(STAMP) $(MANIFEST)  ## create .venv from the lock file and parse the dbt project

demo: setup $(if $(filter postgres,$(WAREHOUSE)),postgres-programs)  ## run the daily DAG crm_daily through Airflow (DATE=yesterday in Lima, CUSTOMERS, SEED, FORCE_PUBLISH=1, WAREHOUSE=postgres)
	$(BIN)/crm demo $(if $(DATE),--date $(DATE)) --customers $(CUSTOMERS) --seed $(SEED) $(if $(FORCE_PUBLISH),--force-publish)

backfill: setup  ## backfill crm_daily through Airflow for FROM..TO (YYYY-MM-DD; MAX_ACTIVE=3 dates at a time; on make airflow's Airflow, or one started for it)
	$(BIN)/crm backfill --from $(FROM) --to $(TO) --customers $(CUSTOMERS) --seed $(SEED) $(if $(MAX_ACTIVE),--max-active-runs $(MAX_ACTIVE))

train: setup  ## run crm_model_training through Airflow as of DATE (WINDOW, CANDIDATES=a,b, MARGIN; after make demo)
	$(BIN)/crm train $(if $(DATE),--date $(DATE)) --customers $(CUSTOMERS) --seed $(SEED) $(if $(WINDOW),--window $(WINDOW)) $(if $(CANDIDATES),--candidates $(CANDIDATES)) $(if $(MARGIN),--margin $(MARGIN))

serve: setup  ## serve the read API on the demo's cache (PORT)
	$(BIN)/crm serve --port $(PORT)

sandbox: setup  ## serve the core-banking sandbox on its own (PORT, CUSTOMERS, SEED, FAULTS="all" or "server_error=0.05,...")
	$(BIN)/crm sandbox --port $(PORT) --customers $(CUSTOMERS) --seed $(SEED) --faults "$(FAULTS)"

airflow: setup  ## start Airflow on the project's DAGs (EXECUTOR=local: airflow standalone; EXECUTOR=celery: WORKERS=2 Celery workers on the embedded Redis)
	$(BIN)/crm airflow --executor $(or $(EXECUTOR),local) --workers $(or $(WORKERS),2)

test: lint $(CHROMIUM) postgres-programs  ## make lint, then the whole pytest suite (DAG integrity, the end-to-end runs on DuckDB and PostgreSQL, the console in Chromium included)
	CRM_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest

test-unit: $(STAMP)  ## the unit tests alone (tests/unit: the extraction plan's arithmetic, the codec, arbitration, contracts): no services, under a minute
	$(BIN)/python -m pytest tests/unit

# the browser tests drive Debian's Chromium with playwright (playwright's own browser download is not
# reachable from a bank's network): installed here when missing
$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "Chromium is missing at $(CHROMIUM): install it, or set CHROMIUM=/path/to/chromium"; exit 1; }
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq --no-install-recommends chromium fonts-liberation

# the PostgreSQL warehouse (WAREHOUSE=postgres, and the tests) starts its own server from Debian's
# postgresql programs: installed here when missing (or set CRM_POSTGRES_BIN to another build's bin/)
postgres-programs:
	@test -n "$$CRM_POSTGRES_BIN" -o -n "$(wildcard /usr/lib/postgresql/*/bin/initdb)" || { \
	  command -v apt-get >/dev/null || { echo "PostgreSQL's programs are missing: install postgresql, or set CRM_POSTGRES_BIN"; exit 1; }; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq --no-install-recommends postgresql; }

sql: setup  ## query the marts as an analyst, never in a run's way (SQL= one statement; WAREHOUSE=postgres: the server's, as the analysts' role)
	$(BIN)/crm sql $(if $(SQL),-c "$(SQL)")

docs: setup  ## dbt's docs of the warehouse and the data gates' results (Great Expectations' Data Docs), served for analysts (DOCS_PORT=8081)
	$(BIN)/crm docs --port $(DOCS_PORT)

evaluate: setup  ## expected acceptances of the latest (or DATE's) assignment vs the oracle's and a random one (CUSTOMERS, SEED as for make demo)
	$(BIN)/crm evaluate $(if $(DATE),--date $(DATE)) --customers $(CUSTOMERS) --seed $(SEED)

BENCHES := extract dbt scoring serving backfill daily daily-postgres loop

bench: setup  ## every benchmark, each to its end; exits 1 when any missed a target (figures in .crm/bench/*.json), then make bench-report
	@failed=""; for area in $(BENCHES); do $(MAKE) --no-print-directory bench-$$area || failed="$$failed bench-$$area"; done; \
	$(BIN)/python -m benchmarks.report; \
	if [ -n "$$failed" ]; then echo "missed a target or failed:$$failed"; exit 1; fi; echo "every benchmark met its targets"

bench-report: setup  ## write docs/benchmarks.md from .crm/bench/*.json (each figure with its commit, date and machine; AREAS="daily dbt": only those sections, the others kept)
	$(BIN)/python -m benchmarks.report $(if $(AREAS),--only $(AREAS))

bench-extract: setup  ## extraction throughput against fetching alone, and its memory at 100,000 and 1,000,000 customers
	$(BIN)/python -m benchmarks.extraction

bench-dbt: setup  ## the dbt build on 1,000,000 customers and ~30,000,000 transactions: full, one more day, features vs hand SQL
	$(BIN)/python -m benchmarks.dbt

bench-backfill: setup  ## a 30-day backfill through Airflow beside the same dates run alone: every mart's rows compared by date (DAYS=30, BACKFILL_CUSTOMERS=1000)
	$(BIN)/python -m benchmarks.backfill --days $(or $(DAYS),30) --customers $(or $(BACKFILL_CUSTOMERS),1000) --seed $(SEED)

bench-daily: setup  ## crm_daily end to end through Airflow for the day after a cached history: time, extracted records, each task, peak memory (DAILY_CUSTOMERS=1000000)
	$(BIN)/python -m benchmarks.daily --customers $(or $(DAILY_CUSTOMERS),1000000)

bench-daily-postgres: setup postgres-programs  ## bench-daily on the embedded PostgreSQL warehouse, a figure beside DuckDB's (DAILY_CUSTOMERS=100000)
	CRM_DBT_TARGET=postgres $(BIN)/python -m benchmarks.daily --customers $(or $(DAILY_CUSTOMERS),100000)

bench-scoring: setup  ## scoring and arbitration of 1,000,000 customers x 12 campaigns: time, memory, capture of the oracle's expected acceptances
	$(BIN)/python -m benchmarks.scoring

bench-loop: setup  ## 14 closed-loop days (make demo each day, make train every 2 days) on 100,000 customers: each day's champion on the first day's pool (must not fall), capture per day, uplift estimated vs true (LOOP_CUSTOMERS, LOOP_DAYS)
	$(BIN)/python -m benchmarks.loop --customers $(or $(LOOP_CUSTOMERS),100000) --days $(or $(LOOP_DAYS),14)

bench-serving: setup  ## snapshot load, memory and API look-ups for 1,000,000 customers
	$(BIN)/python -m benchmarks.serving

lint: setup  ## ruff check, format check, and the layers' import contracts (import-linter, setup.cfg)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=$(CURDIR) $(BIN)/lint-imports --no-cache

format: setup  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock:  ## re-resolve requirements.lock from setup.cfg (needs uv: make setup first)
	$(BIN)/uv pip compile setup.cfg --extra dev --universal --python-version 3.11 \
		--custom-compile-command "make lock" -o requirements.lock

clean:  ## remove local state (.crm/) and dbt build output; keeps .venv
	rm -rf $(CRM_HOME) dbt_project/target dbt_project/logs
