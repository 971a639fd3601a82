"""API keys: stored hashed (SHA-256) with a role; the plain key is shown once, when made. Who may
call which endpoint of the read API."""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

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


API_KEY_SCHEME = "ApiKey"
MARKETING_SALES = ("marketing", "sales")
MARKETING = ("marketing",)
OFFER_READERS = ("sales", "mobile", "marketing")


class Principal:
    def __init__(self, key_id: str, role: str):
        self.key_id = key_id
        self.role = role


class Denied(Exception):
    def __init__(self, status: int, detail: str):
        self.status, self.detail = status, detail


def check_key(key_store: dict[str, dict], key: str | None, roles: tuple[str, ...]) -> Principal:
    """The API key must be known (else 401) and hold one of ``roles`` (else 403)."""
    entry = key_store.get(_hashed(key)) if key else None
    if entry is None:
        raise Denied(401, "missing or unknown API key (header X-API-Key)")
    if entry["role"] not in roles:
        raise Denied(403, f"the {entry['role']} role may not call this endpoint")
    return Principal(entry["key_id"], entry["role"])


@functools.lru_cache(maxsize=1024)
def _hashed(key: str) -> str:
    """SHA-256 of a key, remembered: the same few keys call all day (bounded: made-up keys cannot
    grow it)."""
    return hash_key(key)


def authorize(request: Request, roles: tuple[str, ...]) -> Principal:
    """``check_key`` for an endpoint: a plain call at its top rather than a FastAPI dependency
    (resolving one costs more than the look-up it guards); ``for_roles`` documents it."""
    try:
        return check_key(request.app.state.key_store, request.headers.get("x-api-key"), roles)
    except Denied as denied:
        raise HTTPException(denied.status, detail=denied.detail) from None


def for_roles(*roles: str) -> dict[str, Any]:
    """OpenAPI of an endpoint behind ``authorize``: the X-API-Key scheme and the roles it admits."""
    return {"security": [{API_KEY_SCHEME: []}], "x-roles": list(roles)}
