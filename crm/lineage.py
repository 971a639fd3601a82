"""Where the platform's data lives, named as OpenLineage names datasets.

The tasks of ``crm_daily`` report what they read and wrote to Airflow's hook lineage collector
(``entrypoints.lineage_report``) as asset URIs; the OpenLineage provider turns each into an OpenLineage
dataset with the converter this module registers for their schemes (the package is an Airflow
provider for that alone: ``provider_info``, the entry point ``apache_airflow_provider`` in
setup.cfg). The names follow OpenLineage's naming conventions, the ones its dbt integration gives
each model that Cosmos runs, so that the raw load's tables and the models that read them, the
marts and the assignment that reads them, are the same datasets in a lineage graph:

==================  =====================================  ===================================
where               asset URI                              OpenLineage namespace / name
==================  =====================================  ===================================
the bank's API      ``https://api.bank:443/v1/customers``  ``https://api.bank:443`` / ``/v1/customers``
landing (files)     ``file:///.../landing/customers``      ``file`` / ``/.../landing/customers``
DuckDB              ``duckdb:///.../w.duckdb/raw/t``        ``duckdb:///.../w.duckdb`` / ``w.raw.t``
PostgreSQL          ``postgres://host:5432/db/raw/t``       ``postgres://host:5432`` / ``db.raw.t``
Azure SQL           ``mssql://server:1433/db/raw/t``        ``mssql://server:1433`` / ``db.raw.t``
Redis (snapshot)    ``redis://host:6380/crm``               ``redis://host:6380`` / ``crm``
==================  =====================================  ===================================

No credentials ever enter a URI: only the location.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from crm.settings import Settings

SCHEMES = ("duckdb", "postgres", "mssql", "redis", "http", "https")


def api(base_url: str, endpoint: str) -> str:
    """An endpoint of the bank's integration API (``/v1/customers``) at ``base_url``."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}{parts.path.rstrip('/')}{endpoint}"


def files(directory: Path) -> str:
    """A directory of files (an entity's landing zone)."""
    return Path(directory).resolve().as_uri()


def tables(settings: Settings, names: Iterable[str]) -> list[str]:
    """Tables or views (``schema.name``) of the settings' warehouse, where dbt's profile reaches it
    (its location found once: on the embedded PostgreSQL, finding it checks the server)."""
    from crm.warehouse import dbt_env, engine_name

    engine, env = engine_name(settings), dbt_env(settings)
    if engine == "duckdb":
        where = f"duckdb://{env['CRM_DUCKDB_PATH']}"  # as dbt's profile has it
    elif engine == "postgresql":
        where = f"postgres://{env['CRM_POSTGRES_HOST']}:{env['CRM_POSTGRES_PORT']}/{env['CRM_POSTGRES_DATABASE']}"
    else:
        where = f"mssql://{env['CRM_AZURE_SQL_SERVER']}:1433/{env.get('CRM_AZURE_SQL_DATABASE', 'crm')}"
    return [f"{where}/{name.replace('.', '/', 1)}" for name in names]


def snapshot(redis_url: str, prefix: str) -> str:
    """The offers snapshot: the keys under ``prefix`` on the Redis server of ``redis_url``."""
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":  # the embedded server's socket
        return f"redis://{parts.path}/{prefix}"
    return f"redis://{parts.hostname}:{parts.port or 6379}/{prefix}"


def to_openlineage(asset: Any, lineage_context: Any = None):
    """The OpenLineage dataset of an asset URI of :data:`SCHEMES` (the provider's converter)."""
    from openlineage.client.event_v2 import Dataset

    parts = urlsplit(asset.uri)
    path = PurePosixPath(parts.path)
    if parts.scheme in ("http", "https"):
        return Dataset(namespace=f"{parts.scheme}://{parts.netloc}", name=parts.path)
    if parts.scheme == "redis":
        return Dataset(namespace=f"redis://{parts.netloc}{path.parent}".rstrip("/"), name=path.name)
    if parts.scheme == "duckdb":  # the file, then schema and table; the database is the file's stem
        database = path.parent.parent
        return Dataset(namespace=f"duckdb://{database}", name=f"{database.stem}.{path.parent.name}.{path.name}")
    database, schema, name = path.parts[1:4]
    return Dataset(namespace=f"{parts.scheme}://{parts.netloc}", name=f"{database}.{schema}.{name}")


def provider_info() -> dict[str, Any]:
    """What Airflow's providers manager reads: the converter above for the platform's schemes."""
    from importlib.metadata import version

    return {
        "package-name": "crm-platform",
        "name": "CRM platform",
        "description": "OpenLineage names of the CRM platform's datasets (the bank's API, the warehouse, the cache).",
        "versions": [version("crm-platform")],
        "asset-uris": [
            {"schemes": list(SCHEMES), "handler": None, "to_openlineage_converter": f"{__name__}.to_openlineage"}
        ],
    }
