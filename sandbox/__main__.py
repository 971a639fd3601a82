"""``python -m sandbox``: serve the sandbox bank (``make sandbox`` and the embedded service)."""

from __future__ import annotations

import argparse
import json
import secrets
from pathlib import Path

import uvicorn

from sandbox.app import create_app
from sandbox.bank import Bank
from sandbox.executions import Executions
from sandbox.faults import Faults


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--faults", default="", help='fault rates, e.g. "server_error=0.05,bad_record=0.01", or "all"')
    parser.add_argument("--credentials-file", type=Path, help="JSON with client_id and client_secret")
    parser.add_argument(
        "--executions-dir", type=Path,
        help="where the campaign lists the platform hands the bank are kept (without it, the bank's own "
        "random campaigns are all it contacts)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.credentials_file:
        creds = json.loads(args.credentials_file.read_text())
    else:
        creds = {
            "client_id": "crm-platform",
            "client_secret": secrets.token_urlsafe(24),
        }
        print(f"OAuth2 client credentials for this run: {json.dumps(creds)}", flush=True)
    faults = Faults.parse(args.faults)
    executions = Executions(args.executions_dir) if args.executions_dir else None
    bank = Bank(args.customers, args.seed, executions=executions)
    app = create_app(bank, creds["client_id"], creds["client_secret"], faults)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
