"""API keys: stored hashed (SHA-256) with a role; the plain key is shown once, when made."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

from crm.settings import Settings

ROLES = ("marketing", "sales", "mobile")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_key_store(path: Path) -> dict[str, dict]:
    """{sha256 of key: {"key_id": ..., "role": ...}}; empty when the file does not exist."""
    if not path.exists():
        return {}
    store = json.loads(path.read_text())
    return {entry["sha256"]: {"key_id": entry["key_id"], "role": entry["role"]} for entry in store["keys"]}


def issue_keys(path: Path, roles: tuple[str, ...] = ROLES) -> dict[str, str]:
    """Make one new key per role, add their hashes to the store, return the plain keys."""
    store = json.loads(path.read_text()) if path.exists() else {"keys": []}
    plain = {}
    for role in roles:
        key = f"crm_{role}_{secrets.token_urlsafe(24)}"
        key_id = f"{role}-{len(store['keys']) + 1}"
        store["keys"].append({"key_id": key_id, "role": role, "sha256": hash_key(key)})
        plain[role] = key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(store, indent=2))
    path.chmod(0o600)
    return plain


def ensure_demo_keys(settings: Settings) -> dict[str, str]:
    """One API key per role for the demo, in .crm/demo_api_keys.json (hashes in the key store);
    the same keys again while the store still holds them."""
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
