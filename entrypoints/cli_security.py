"""The ``crm`` verbs of the read API's security: integration keys (``crm keys``), the audit trail's
verification (``crm audit verify``) and development bearer tokens (``crm token``);
``entrypoints.cli`` adds them to ``crm``."""

from __future__ import annotations

from pathlib import Path

import click

from crm.settings import get_settings

KEY_ROLES = ("marketing", "sales")


_STORE = click.option("--file", "store", type=click.Path(path_type=Path),
                      help="the key store [CRM_API_KEYS_FILE or .crm/api_keys.json]")  # fmt: skip


@click.group()
def keys() -> None:
    """Integration API keys (the bank's systems): issue, list, revoke. People use bearer tokens."""


@keys.command("issue")
@click.option("--role", required=True, type=click.Choice(KEY_ROLES))
@click.option("--name", required=True, help="the integration, as the audit log names it (e.g. adobe-campaign)")
@click.option("--days", type=int, default=90, help="valid for this many days (0: no expiry)")
@_STORE
def keys_issue(role: str, name: str, days: int, store: Path | None) -> None:
    """Issue a key: its hash goes to the store, the key is printed once."""
    from serving.auth import issue_key

    store = store or get_settings().api_keys_path
    key_id, key = issue_key(store, role, name, days or None)
    click.echo(key)
    click.echo(f"({key_id} for {name}, role {role}; hash added to {store}; the key is not shown again)", err=True)


@keys.command("revoke")
@click.argument("key_id")
@_STORE
def keys_revoke(key_id: str, store: Path | None) -> None:
    """Revoke a key: a running API refuses it within CRM_API_KEY_RELOAD_S seconds, no restart."""
    from serving.auth import revoke_key

    store = store or get_settings().api_keys_path
    if not revoke_key(store, key_id):
        raise click.ClickException(f"no key {key_id} that is not already revoked in {store}")
    click.echo(f"revoked {key_id}")


@keys.command("list")
@_STORE
def keys_list(store: Path | None) -> None:
    """The store's keys (id, name, role, created, expiry, revocation), never the keys themselves."""
    from serving.auth import list_keys

    for entry in list_keys(store or get_settings().api_keys_path):
        click.echo("\t".join(str(entry.get(k) or "-") for k in ("key_id", "name", "role", "created_at", "expires_at",
                                                                "revoked_at")))  # fmt: skip


@click.group()
def audit() -> None:
    """The read API's audit trail."""


@audit.command("verify")
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="the audit trail [CRM_AUDIT_DIR or .crm/audit]")  # fmt: skip
@click.option("--seals", "seal_logs", multiple=True, type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="a log the API's seals were shipped to (the deployment's log sink); repeatable")  # fmt: skip
def audit_verify(directory: Path | None, seal_logs: tuple[Path, ...]) -> None:
    """Check every record's MAC and chain, every file against its seal, and the seals' ledger (and
    its off-host copy, with --seals): exit 1 naming each record edited, inserted, removed or cut
    off and each file missing. The key is CRM_AUDIT_KEY_FILE's."""
    from serving.audit import load_keys
    from serving.audit_verify import seals_from_log, verify

    settings = get_settings()
    directory = directory or settings.audit_dir
    keys = load_keys(settings.audit_key_path, create=False)
    off_host = [seal for log in seal_logs for seal in seals_from_log(log.read_text(errors="replace").splitlines())]
    count, problems, notes = verify(directory, keys, off_host)
    for line in (*problems, *notes):
        click.echo(line)
    if problems:
        raise click.ClickException(f"the audit trail in {directory} was tampered with: {len(problems)} problem(s)")
    against = f" and {len(off_host)} seals shipped off the host" if seal_logs else ""
    click.echo(f"{count} records in {directory}: every MAC, chain and seal is intact (checked against its ledger"
               f"{against})")  # fmt: skip


@click.command()
@click.option("--customer", type=click.IntRange(min=1), help="a customer's token (the mobile app): its customer id")
@click.option("--staff", help="a member of staff's token: the employee")
@click.option("--role", type=click.Choice(KEY_ROLES), help="the staff member's role")
@click.option("--minutes", type=click.IntRange(min=1), default=60)
def token(customer: int | None, staff: str | None, role: str | None, minutes: int) -> None:
    """Sign a bearer token with the development identity provider's key (made on first use in the
    data directory; never in production) and print it."""
    from serving.auth import CUSTOMER, sign_dev_token

    if (customer is None) == (staff is None):
        raise click.UsageError("give --customer ID or --staff NAME --role sales|marketing")
    if staff is not None and role is None:
        raise click.UsageError("--staff needs --role sales|marketing")
    subject, claim = (str(customer), CUSTOMER) if customer is not None else (staff, role)
    click.echo(sign_dev_token(get_settings(), subject, claim, minutes))


COMMANDS = (keys, audit, token)
