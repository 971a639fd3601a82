"""make docs: the dbt docs site analysts browse, generated from the project (and the warehouse)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from crm.settings import REPO_ROOT


def test_the_docs_site_describes_every_mart(tmp_path):
    env = {**os.environ, "CRM_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "entrypoints.cli", "docs", "--no-serve"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    site = tmp_path / "docs" / "dbt"
    assert (site / "index.html").stat().st_size > 100_000
    manifest = json.loads((site / "manifest.json").read_text())
    marts = {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model" and "marts" in n["fqn"]}
    assert {
        "customer_features", "campaign_eligibility", "campaign_exclusions", "fct_transactions", "fct_campaign_contacts",
        "dim_customers", "campaign_performance", "customer_360",
    } == set(marts)  # fmt: skip
    for name, node in marts.items():
        assert node["description"], f"mart {name} has no description"
        # an enforced contract: the build fails unless the columns documented are exactly the model's
        assert node["contract"]["enforced"], f"mart {name} has no enforced contract"
        assert len(node["columns"]) >= 4, name
        undocumented = [c for c, column in node["columns"].items() if not column["description"]]
        assert undocumented == [], f"mart {name}: columns without a description"
        untyped = [c for c, column in node["columns"].items() if not column["data_type"]]
        assert untyped == [], f"mart {name}: columns without a data type"
    assert json.loads((site / "catalog.json").read_text())["metadata"]["dbt_schema_version"]


def test_the_read_api_and_the_marketing_segments_are_exposures_of_the_marts():
    manifest = json.loads((REPO_ROOT / "dbt_project" / "target" / "manifest.json").read_text())
    exposures = {e["name"]: e for e in manifest["exposures"].values()}
    assert {"read_api_customer_offers", "marketing_segments"} <= set(exposures)
    for exposure in exposures.values():
        upstream = exposure["depends_on"]["nodes"]
        assert "source.crm.scoring.customer_campaign_assignments" in upstream
        assert any(node.startswith("model.crm.campaign_eligibility") for node in upstream)
