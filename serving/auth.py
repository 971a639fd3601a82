"""Who calls the read API, and what they may read (docs/decisions/0011).

- **People** call with ``Authorization: Bearer <JWT>`` signed by the bank's identity provider,
  verified with PyJWT (signature, issuer, audience, expiry) against its JWKS URL or a public key
  file. A customer's token (the mobile app) has the customer id as subject and reads that customer's
  offers only (``/v1/me/offers``); a member of staff's has the employee as subject and the role
  (``sales`` or ``marketing``) in the role claim. Locally ``crm token`` signs tokens with a
  development key made on first use in the data directory.
- **Integrations** (the bank's systems, e.g. marketing's campaign tool) call with ``X-API-Key``: a
  named key with a role, an expiry and a revocation, stored hashed (SHA-256) in the key store, which a
  running API re-reads every ``CRM_API_KEY_RELOAD_S`` seconds.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from crm.settings import Settings, SettingsError

CUSTOMER = "customer"
STAFF_ROLES = ("marketing", "sales")
KEY_ROLES = STAFF_ROLES
MARKETING_SALES = ("marketing", "sales")
MARKETING = ("marketing",)
CUSTOMERS = (CUSTOMER,)
API_KEY_SCHEME = "ApiKey"
BEARER_SCHEME = "Bearer"
ALGORITHMS = ["RS256", "PS256", "ES256"]
DEV_KEY_ID = "crm-dev-1"
TOKEN_LEEWAY_S = 30  # clock skew between the identity provider and the API
MAX_CUSTOMER_ID = 10**12
# a customer id as the core bank writes it: ASCII digits, no sign, no leading zero, at most 10**12
CANONICAL_CUSTOMER_ID = re.compile(r"[1-9][0-9]{0,12}")


def canonical_customer_id(text: str) -> int | None:
    """The customer id ``text`` names in its one canonical spelling, else None (``"00012"``,
    ``"١٢"``, ``"１２"``, ``"²"`` and ids past 10**12 name none)."""
    if CANONICAL_CUSTOMER_ID.fullmatch(text) is None:
        return None
    value = int(text)
    return value if value <= MAX_CUSTOMER_ID else None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a call is from: ``kind`` customer, staff or integration; ``subject`` the customer id, the
    employee or the integration's name; ``credential`` the key id or the token's id."""

    kind: str
    subject: str
    role: str
    credential: str
    expires_at: float | None = None  # epoch seconds


class Denied(Exception):
    def __init__(self, status: int, detail: str, who: Principal | None = None):
        self.status, self.detail, self.who = status, detail, who


# ---- integration keys ---------------------------------------------------------------------------


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@functools.lru_cache(maxsize=1024)
def _hashed(key: str) -> str:
    """SHA-256 of a key, remembered: the same few keys call all day (bounded: made-up keys cannot
    grow it)."""
    return hash_key(key)


def _read_store(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"keys": []}


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole (a reader sees the old file or the new one), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def issue_key(path: Path, role: str, name: str, days: int | None = 90) -> tuple[str, str]:
    """A new integration key for ``name`` with ``role``, valid ``days`` (None: no expiry); its hash
    goes to the store, the plain key is returned once, with its key id."""
    if role not in KEY_ROLES:
        raise ValueError(f"an API key's role is one of {', '.join(KEY_ROLES)} (people use bearer tokens), got {role!r}")
    store = _read_store(path)
    key = f"crm_{role}_{secrets.token_urlsafe(24)}"
    key_id = f"{role}-{len(store['keys']) + 1}"
    now = dt.datetime.now(dt.UTC)
    store["keys"].append(
        {
            "key_id": key_id,
            "name": name,
            "role": role,
            "sha256": hash_key(key),
            "created_at": now.isoformat(timespec="seconds"),
            "expires_at": (now + dt.timedelta(days=days)).isoformat(timespec="seconds") if days else None,
            "revoked_at": None,
        }
    )
    _write_private(path, json.dumps(store, indent=2))
    return key_id, key


def issue_keys(path: Path, roles: tuple[str, ...] = KEY_ROLES, days: int | None = 90) -> dict[str, str]:
    """One new key per role (named ``<role>-integration``); the plain keys by role."""
    return {role: issue_key(path, role, f"{role}-integration", days)[1] for role in roles}


def revoke_key(path: Path, key_id: str) -> bool:
    """Mark ``key_id`` revoked in the store (a running API stops accepting it at its next re-read)."""
    store = _read_store(path)
    for entry in store["keys"]:
        if entry["key_id"] == key_id and not entry.get("revoked_at"):
            entry["revoked_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            _write_private(path, json.dumps(store, indent=2))
            return True
    return False


def list_keys(path: Path) -> list[dict]:
    """The store's keys without their hashes."""
    return [{k: v for k, v in entry.items() if k != "sha256"} for entry in _read_store(path)["keys"]]


def ensure_demo_keys(settings: Settings) -> dict[str, str]:
    """One integration key per role for the demo, in .crm/demo_api_keys.json (hashes in the key
    store); the same keys again while the store still accepts them."""
    path = settings.demo_api_keys_path
    if path.exists():
        keys = json.loads(path.read_text())
        store = KeyStore(settings.api_keys_path)
        if set(keys) == set(KEY_ROLES) and all(store.accepts(k) for k in keys.values()):
            return keys
    keys = issue_keys(settings.api_keys_path)
    _write_private(path, json.dumps(keys, indent=2))
    return keys


class KeyStore:
    """The integration keys a running API accepts, re-read from the store file when it changed
    (checked at most every ``reload_s`` seconds, so a revocation takes effect without a restart)."""

    def __init__(self, path: Path, reload_s: float = 10.0):
        self.path = path
        self.reload_s = reload_s
        self.entries: dict[str, dict] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self.reload()

    def reload(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self.entries, self._stamp = {}, None
            return
        if (st.st_mtime_ns, st.st_size) == self._stamp:
            return
        entries = {}
        for entry in _read_store(self.path)["keys"]:
            expires = entry.get("expires_at")
            entries[entry["sha256"]] = {
                "key_id": entry["key_id"],
                "name": entry.get("name") or entry["key_id"],
                "role": entry["role"],
                "expires_at": dt.datetime.fromisoformat(expires).timestamp() if expires else None,
                "revoked": bool(entry.get("revoked_at")),
            }
        self.entries, self._stamp = entries, (st.st_mtime_ns, st.st_size)

    def principal(self, key: str) -> Principal:
        now = time.monotonic()
        if now - self._checked >= self.reload_s:
            self._checked = now
            self.reload()
        entry = self.entries.get(_hashed(key))
        if entry is None:
            raise Denied(401, "unknown API key (header X-API-Key)")
        if entry["revoked"]:
            raise Denied(401, f"API key {entry['key_id']} was revoked")
        if entry["expires_at"] is not None and entry["expires_at"] <= time.time():
            raise Denied(401, f"API key {entry['key_id']} has expired")
        return Principal("integration", entry["name"], entry["role"], entry["key_id"], entry["expires_at"])

    def accepts(self, key: str) -> bool:
        try:
            self.principal(key)
        except Denied:
            return False
        return True


# ---- bearer tokens ------------------------------------------------------------------------------


def _dev_private_key(settings: Settings, create: bool):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = settings.dev_signing_key_path
    if not path.exists():
        if not create:
            return None
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(path, pem.decode())
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def sign_dev_token(settings: Settings, subject: str, role: str, minutes: int = 60) -> str:
    """A token from the development identity provider (``crm token``): never in production, where
    the bank's identity provider issues them."""
    if settings.production:
        raise SettingsError("crm token signs development tokens only; in production the bank's identity provider does")
    now = int(time.time())
    claims = {
        "iss": settings.identity.jwt_issuer,
        "aud": settings.identity.jwt_audience,
        "sub": subject,
        settings.identity.jwt_role_claim: role,
        "iat": now,
        "exp": now + minutes * 60,
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, _dev_private_key(settings, create=True), algorithm="RS256", headers={"kid": DEV_KEY_ID})


class TokenVerifier:
    """Verifies bearer tokens against the identity provider's keys; a verified token is remembered
    until it expires (an app calls with the same token many times), so the hot path verifies once."""

    MAX_REMEMBERED = 50_000

    def __init__(self, settings: Settings):
        from cryptography.hazmat.primitives import serialization

        self.settings = settings
        source = settings.token_keys
        self.jwks = (
            jwt.PyJWKClient(source.jwks_url, cache_keys=True, lifespan=300, timeout=5) if source.jwks_url else None
        )
        if source.public_key_file is not None:
            self.key = serialization.load_pem_public_key(source.public_key_file.read_bytes())
        elif self.jwks is None:  # local: the development identity provider's key, made now if need be
            self.key = _dev_private_key(settings, create=True).public_key()
        self.remembered: dict[str, Principal] = {}

    def principal(self, token: str) -> Principal:
        known = self.remembered.get(token)
        if known is not None:
            if known.expires_at > time.time() - TOKEN_LEEWAY_S:
                return known
            del self.remembered[token]
        who = self._verify(token)
        if len(self.remembered) >= self.MAX_REMEMBERED:
            self.remembered.clear()
        self.remembered[token] = who
        return who

    def _verify(self, token: str) -> Principal:
        s = self.settings
        try:
            key = self.jwks.get_signing_key_from_jwt(token).key if self.jwks else self.key
            claims = jwt.decode(token, key, algorithms=ALGORITHMS, audience=s.identity.jwt_audience, issuer=s.identity.jwt_issuer,
                                leeway=TOKEN_LEEWAY_S, options={"require": ["exp", "iss", "aud", "sub"]})  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise Denied(401, "the bearer token has expired") from None
        except jwt.InvalidAudienceError:
            raise Denied(
                401, f"the bearer token is not for this API (audience must be {s.identity.jwt_audience})"
            ) from None
        except jwt.InvalidIssuerError:
            raise Denied(401, "the bearer token is not from the bank's identity provider (issuer)") from None
        except jwt.PyJWTError as exc:
            raise Denied(401, f"invalid bearer token: {exc}") from None
        role, subject = claims.get(s.identity.jwt_role_claim), str(claims["sub"])
        if role == CUSTOMER:
            if canonical_customer_id(subject) is None:
                raise Denied(403, "a customer token's subject must be a customer id (digits 0-9, no leading zero)")
            kind = "customer"
        elif role in STAFF_ROLES:
            kind = "staff"
        else:
            raise Denied(403, f"the bearer token has no role this API knows (claim {s.identity.jwt_role_claim})")
        # the token's id: its jti, else its hash (what a sign-out revokes; never the token itself)
        credential = str(claims["jti"]) if claims.get("jti") else "sha256:" + hash_key(token)[:32]
        return Principal(kind, subject, role, credential, float(claims["exp"]))


# ---- authentication and authorization -----------------------------------------------------------


class Revocations:
    """Bearer tokens signed out before they expire (the console's sign-out), shared by every API
    worker through Redis: a sorted set of token ids scored by their expiry, and a version counter
    each worker polls with its quota sync, re-reading the set when it moved. A worker knows its own
    revocations at once, the others' within a sync (0.5 s)."""

    def __init__(self, prefix: str):
        self.key, self.version_key = f"{prefix}:revoked-tokens", f"{prefix}:revoked-tokens:version"
        self.ids: set[str] = set()
        self.version: bytes | str | None = None

    def __contains__(self, who: Principal) -> bool:
        return who.credential in self.ids

    async def revoke(self, client, who: Principal) -> None:
        """Refuse ``who``'s token from now until it expires, in every worker."""
        now = time.time()
        self.ids.add(who.credential)
        async with client.pipeline(transaction=True) as pipe:
            pipe.zadd(self.key, {who.credential: (who.expires_at or now) + TOKEN_LEEWAY_S})
            pipe.zremrangebyscore(self.key, "-inf", now)
            pipe.incr(self.version_key)
            await pipe.execute()

    async def sync(self, client) -> None:
        version = await client.get(self.version_key)
        if version != self.version:
            members = await client.zrangebyscore(self.key, time.time(), "+inf")
            self.ids = {m.decode() if isinstance(m, bytes) else m for m in members}
            self.version = version


class Gate:
    """The app's credentials check: bearer tokens (not signed out) and integration keys."""

    def __init__(self, settings: Settings):
        self.tokens = TokenVerifier(settings)
        if settings.production and not settings.api_keys_path.exists():
            raise SettingsError(
                f"CRM_API_KEYS_FILE: the API key store {settings.api_keys_path} does not exist; production never "
                "makes keys (issue them with crm keys issue --file ...)"
            )
        self.keys = KeyStore(settings.api_keys_path, settings.identity.api_key_reload_s)
        self.revoked = Revocations(settings.serving.redis_prefix)

    def principal(self, authorization: str | None, api_key: str | None) -> Principal:
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Denied(401, "the Authorization header must be 'Bearer <token>'")
            who = self.tokens.principal(token.strip())
            if self.revoked.ids and who in self.revoked:
                raise Denied(401, "this session was signed out: sign in again")
            return who
        if api_key:
            return self.keys.principal(api_key)
        raise Denied(401, "missing credentials: Authorization: Bearer <token> for people, X-API-Key for integrations")

    def check(self, authorization: str | None, api_key: str | None, roles: tuple[str, ...]) -> Principal:
        """The caller (else 401), holding one of ``roles`` (else 403)."""
        who = self.principal(authorization, api_key)
        if who.role not in roles:
            if who.kind == "customer":
                raise Denied(403, "a customer token reads its own offers only (GET /v1/me/offers)", who)
            raise Denied(403, f"the {who.role} role may not call this endpoint", who)
        return who
