"""Every gate's validation result, kept; and Great Expectations' Data Docs built from them.

Each validation of :mod:`expectations.runner` is kept in GX's validation results store, a folder
of JSON files under ``<CRM_HOME>/data-quality/validations`` (one per suite, business date and
batch; a rerun adds one beside the earlier), with the counts only: the values that failed an
expectation (or an observed minimum) may be a customer's personal data, so only counts and shares
are kept.
:func:`build` renders them with GX's own site builder into ``<CRM_HOME>/docs/data-quality`` (``make
docs`` serves it beside dbt's docs). GX's pages load their styles and scripts from public CDNs;
the site is for a bank's closed network, so the same files come from the npm registry once
(pinned, each tarball checked against its sha512, kept in ``~/.cache/crm-platform/npm``; a mirror:
``CRM_NPM_REGISTRY``) and every page is pointed at its copy.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import logging
import os
import re
import shutil
import tarfile
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crm.settings import Settings

log = logging.getLogger(__name__)

# what an expectation's result keeps: counts and shares, never a value of the rows (a failed
# expectation's examples, an observed minimum or most common value may be a customer's data)
COUNTS = ("element_count", "unexpected_count", "unexpected_percent", "unexpected_percent_total",
          "unexpected_percent_nonmissing", "missing_count", "missing_percent")  # fmt: skip

# npm package -> (version, the tarball's sha512 as the registry gives it)
PACKAGES = {
    "vega": ("5.33.1", "1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw=="),
    "vega-lite": ("5.23.0", "l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA=="),
    "vega-embed": (
        "6.29.0",
        "PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
    ),
    "@fortawesome/fontawesome-free": (
        "6.6.0",
        "60G28ke/sXdtS9KZCpZSHHkCbdsOGEhIUGlwq6yhY74UpTiToIh8np7A8yphhM4BWsvNFtIvLpi4co+h9Mr9Ow==",
    ),
    "jquery": ("3.7.1", "m4avr8yL8kmFN8psrbFFFmB/If14iN5o9nw/NgnnM+kybDJpRsAynV2BsfpTYrTRysYUdADVD7CkUUizgkpLfg=="),
    "popper.js": ("1.12.9", "s0EEi9xiSCdqz9lV4IiVH5yIZnDX/U1t0tCjB+0jXx9jW8lrR7kOpVupiUg175ogqVoudpDXHF1p6dKATCHMeg=="),
    "bootstrap": ("4.3.1", "rXqOmH1VilAt2DyPzluTi2blhk17bO7ef+zLLPlWvG494pDxcM234pJ8wTc/6R40UWizAIIMgxjvxZg5kmsbag=="),
    "bootstrap-table": (
        "1.19.1",
        "WvV+l1AI/C+zThaKmfHmi/IuayVNB0qdFyEhFx1jyZhO0oLtNJNANkCR3rvJf6Dkh72dsLElxpE/bzK9seEQLA==",
    ),
    "bootstrap-datepicker": (
        "1.9.0",
        "9rYYbaVOheGYxjOr/+bJCmRPihfy+LkLSg4fIFMT9Od8WwWB/MB50w0JO1eBgKUMbb7PFHQD5uAfI3ArAxZRXA==",
    ),
    "@forevolve/bootstrap-dark": (
        "1.1.0",
        "A3ucpEpxPoTVO490lZZCfjPXxv832l7mm1IxX3bXyxvgwnPGXDLyh7dWrphXKO8YBAu3EswbBEu3VSW8NRMW3A==",
    ),
}

# each address GX's templates load -> (package, its file); bootstrap-table's filter-control CSS is
# asked for at 1.19.0 beside 1.19.1's script: 1.19.1's serves both
CDN = {
    "https://cdn.jsdelivr.net/npm/vega@5": ("vega", "build/vega.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-lite@5": ("vega-lite", "build/vega-lite.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-embed@6": ("vega-embed", "build/vega-embed.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "@fortawesome/fontawesome-free",
        "css/all.min.css",
    ),
    "https://code.jquery.com/jquery-3.7.1.min.js": ("jquery", "dist/jquery.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        "popper.js",
        "dist/umd/popper.min.js",
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": ("bootstrap", "dist/js/bootstrap.min.js"),
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        "bootstrap",
        "dist/css/bootstrap.min.css",
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        "bootstrap-table",
        "dist/bootstrap-table.min.js",
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        "bootstrap-table",
        "dist/bootstrap-table.min.css",
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": (
        "bootstrap-table",
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": (
        "bootstrap-table",
        "dist/extensions/filter-control/bootstrap-table-filter-control.css",
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": (
        "bootstrap-table",
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": (
        "bootstrap-datepicker",
        "dist/js/bootstrap-datepicker.min.js",
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": (
        "bootstrap-datepicker",
        "dist/css/bootstrap-datepicker.min.css",
    ),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": (
        "@forevolve/bootstrap-dark",
        "dist/css/bootstrap-prefers-dark.css",
    ),
}
# what a CSS file of CDN loads beside it (Font Awesome's fonts, relative to its css/)
ALONGSIDE = {"@fortawesome/fontawesome-free": "webfonts/"}
VENDOR = "static/vendor"
# GX's logo, from its own bucket; the site has a copy under static/images (the dark one: the light)
GX_ASSETS = re.compile(r"https://great-expectations-web-assets\.s3\.us-east-2\.amazonaws\.com/([\w.-]+)(?:\?d=[\w.]+)?")


def results_dir(home: Path) -> Path:
    return home / "data-quality" / "validations"


def site_dir(home: Path) -> Path:
    return home / "docs" / "data-quality"


def context(home: Path, site: Path | None = None):
    """An ephemeral GX context whose validation results store is the folder under ``home`` (and,
    with ``site``, whose Data Docs site is built there)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import DataContextConfig, InMemoryStoreBackendDefaults

    defaults = InMemoryStoreBackendDefaults()
    stores = dict(defaults.stores)
    stores[defaults.validation_results_store_name] = {
        "class_name": "ValidationResultsStore",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(results_dir(home))},
    }
    sites = {}
    if site is not None:
        sites["crm"] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_cta_footer": False},
        }
    config = DataContextConfig(store_backend_defaults=defaults, stores=stores, data_docs_sites=sites,
                               analytics_enabled=False)  # fmt: skip
    return gx.get_context(mode="ephemeral", project_config=config)


def keep(ctx, result, suite_name: str, run_name: str, batch: str) -> None:
    """Keep ``result`` (with counts, never the rows' values) as the validation of ``suite_name`` for
    ``run_name`` (the business date) and ``batch`` (what was validated)."""
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    for r in result.results:
        if r.result:
            observed = r.result.get("observed_value")
            kept = {k: r.result[k] for k in COUNTS if k in r.result}
            if isinstance(observed, int | float) and not isinstance(observed, bool):  # a count (rows)
                kept["observed_value"] = observed
            r.result.clear()
            r.result.update(kept)
    key = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite_name),
        run_id=RunIdentifier(run_name=run_name, run_time=dt.datetime.now(dt.UTC)),
        batch_identifier=re.sub(r"[^\w.-]+", "_", batch),
    )
    ctx.validation_results_store.set(key, result)


def build(settings: Settings) -> Path:
    """Data Docs of every validation kept under ``CRM_HOME``, in ``<CRM_HOME>/docs/data-quality``,
    loading nothing from outside; the site's index page."""
    home = settings.home
    site = site_dir(home)
    if site.exists():
        shutil.rmtree(site)
    results_dir(home).mkdir(parents=True, exist_ok=True, mode=0o700)
    _set_aside_unreadable(home)
    site.mkdir(parents=True, mode=0o700)
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context(home, site).build_data_docs()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "crm-platform" / "npm"
    _vendor(site, cache, settings.platform.npm_registry)
    return site / "index.html"


def _set_aside_unreadable(home: Path) -> None:
    """A result cut off as it was written (its task killed) would stop GX's site builder: moved to
    ``<home>/data-quality/unreadable/``, named in the log."""
    import json

    for path in results_dir(home).rglob("*.json"):
        try:
            json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            target = home / "data-quality" / "unreadable" / path.relative_to(results_dir(home))
            target.parent.mkdir(parents=True, exist_ok=True)
            path.replace(target)
            log.warning("validation result %s is unreadable (cut off as it was written): moved to %s", path, target)


def _tarball(package: str, cache: Path, registry: str) -> bytes:
    version, integrity = PACKAGES[package]
    local = cache / f"{package.replace('/', '__')}-{version}.tgz"
    if local.exists():
        data = local.read_bytes()
    else:
        name = package.split("/")[-1]
        url = f"{registry.rstrip('/')}/{package}/-/{name}-{version}.tgz"
        log.info("fetching %s", url)
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (the registry's https)
            data = response.read()
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != integrity:
        raise RuntimeError(f"npm package {package}@{version}: sha512 {digest} is not the pinned {integrity}")
    if not local.exists():
        cache.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
    return data


def _local_image(site: Path, name: str) -> str:
    return name if (site / "static" / "images" / name).exists() else "logo-long.png"


def _vendor(site: Path, cache: Path, registry: str) -> None:
    """Copy each file GX's pages load into ``static/vendor`` and point the pages at the copies."""
    wanted: dict[str, list[str]] = {}
    for package, member in CDN.values():
        wanted.setdefault(package, []).append(member)
    for package, members in wanted.items():
        target = site / VENDOR / package
        alongside = ALONGSIDE.get(package)
        with tarfile.open(fileobj=io.BytesIO(_tarball(package, cache, registry)), mode="r:gz") as tar:
            for info in tar.getmembers():
                inner = info.name.partition("/")[2]  # a tarball holds one folder ("package/" mostly)
                if info.isfile() and (inner in members or (alongside and inner.startswith(alongside))):
                    out = target / inner
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(tar.extractfile(info).read())
    for page in site.rglob("*.html"):
        depth = len(page.relative_to(site).parts) - 1
        html = page.read_text()
        for url, (package, member) in CDN.items():
            html = html.replace(f'"{url}"', f'"{"../" * depth}{VENDOR}/{package}/{member}"')
        # the CDN files' integrity attributes: the same library, from another build
        html = re.sub(r'\s+integrity="[^"]*"\s+crossorigin="anonymous"', "", html)
        html = GX_ASSETS.sub(lambda m, up="../" * depth: f"{up}static/images/{_local_image(site, m[1])}", html)
        page.write_text(html)
    for sheet in (site / "static" / "styles").glob("*.css"):  # beside static/images/
        sheet.write_text(GX_ASSETS.sub(lambda m: f"../images/{_local_image(site, m[1])}", sheet.read_text()))
    loads = re.compile(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="(https?://[^"]+)"|url\([\'"]?(https?://[^)\'"]+)')
    leftover = sorted({u for p in [*site.rglob("*.html"), *site.rglob("*.css")] for m in loads.findall(p.read_text())
                       for u in m if u})  # fmt: skip
    if leftover:
        raise RuntimeError(f"Data Docs still load from outside: {leftover}")
