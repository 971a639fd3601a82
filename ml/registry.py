"""MLflow tracking and registry: where the propensity model is logged, registered and found."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

from crm.settings import Settings

log = logging.getLogger(__name__)

# skops (MLflow's sklearn format here) finds the module of objects without ``__module__`` (scipy's
# ufuncs) by looking the name up in every loaded module. Airflow's deprecation shims
# (``airflow.utils.timezone`` and others) answer any name with a DeprecatedImportWarning (a
# FutureWarning; skops silences only DeprecationWarning): over a thousand lines in a task log for
# each model saved or loaded. Only those, raised on behalf of that scan, are dropped.
warnings.filterwarnings("ignore", message=r"The `airflow\.", category=FutureWarning, module=r"skops\.io\._utils")

EXPERIMENT = "crm-campaign-propensity"
CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def mlflow_client(settings: Settings):
    """Point MLflow at the configured store and return a client (creates the local store)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow

    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        (settings.home / "mlflow").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=settings.mlflow_artifact_root)
    mlflow.set_experiment(EXPERIMENT)
    return mlflow.MlflowClient()


def champion(settings: Settings) -> ModelRef | None:
    """The registered model version holding the ``champion`` alias, or None when the registry has
    no such model or the model no such alias. Any other failure (the registry unreachable, refused,
    failing) raises: the caller must never take it for "no champion" and train one in its place."""
    client = mlflow_client(settings)
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        model = client.get_registered_model(settings.model.model_name)
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    version = (model.aliases or {}).get(CHAMPION)
    return None if version is None else ModelRef(settings.model.model_name, str(version))


def latest_version(settings: Settings):
    """The newest registered version of the propensity model, with its tags (candidate, promotion)."""
    client = mlflow_client(settings)
    return max(client.search_model_versions(f"name = '{settings.model.model_name}'"), key=lambda v: int(v.version))


def model_inputs(model_uri: str) -> list[str]:
    """The columns a logged model reads: its signature's, or today's features for a model logged
    without one (registered by hand). Scoring and the promotion gate read a champion alike."""
    from mlflow.models import get_model_info

    from ml.features import FEATURES

    signature = get_model_info(model_uri).signature
    return list(signature.inputs.input_names()) if signature is not None else list(FEATURES)
