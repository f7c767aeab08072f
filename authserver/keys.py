"""Signing keys: generated on first start, rotated by command, published as a JWKS.

Each private key is a PEM file `<kid>.pem` (mode 0600) in the keys folder;
`keys.json` beside them records each key's algorithm and state (active,
retiring, retired). The `kid` is the key's RFC 7638 thumbprint. A process
parses the keys once and re-reads them only when `keys.json` changes on disk,
so every instance sharing the folder sees a rotation without a restart.
"""

import base64
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

log = logging.getLogger(__name__)

METADATA_FILE = "keys.json"
LOCK_FILE = ".keys.lock"
ACTIVE, RETIRING, RETIRED = "active", "retiring", "retired"
# How often a process looks at keys.json for a rotation made elsewhere.
RELOAD_CHECK_SECONDS = 1.0
# Required members of each key type for the RFC 7638 thumbprint.
THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}


class KeysError(RuntimeError):
    """The keys folder is unusable."""


@dataclass(frozen=True)
class SigningKey:
    """A parsed key: what signing needs and what the JWKS publishes."""

    kid: str
    alg: str
    state: str
    private_key: Any
    public_jwk: dict
    created_at: str
    retiring_since: str | None = None


def _generate_private_key(alg: str):
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise KeysError(f"unsupported signing algorithm {alg!r}")


def public_jwk(public_key) -> dict:
    """The public JWK members of a key, without kid/alg/use."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ECAlgorithm.to_jwk(public_key, as_dict=True)
    if isinstance(public_key, rsa.RSAPublicKey):
        return RSAAlgorithm.to_jwk(public_key, as_dict=True)
    return OKPAlgorithm.to_jwk(public_key, as_dict=True)


def thumbprint(jwk: dict) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK, base64url without padding."""
    members = {name: jwk[name] for name in THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def _locked(keys_dir: Path):
    """Serialise key changes between processes sharing the folder."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    with open(keys_dir / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_metadata(keys_dir: Path) -> list[dict]:
    path = keys_dir / METADATA_FILE
    if not path.exists():
        return []
    try:
        return json.loads(path.read_text())["keys"]
    except (ValueError, KeyError, TypeError) as error:
        raise KeysError(f"{path} is not valid key metadata: {error}") from None


def _write_metadata(keys_dir: Path, entries: list[dict]) -> None:
    """Replace keys.json atomically, so readers never see half a file."""
    tmp = keys_dir / (METADATA_FILE + ".tmp")
    tmp.write_text(json.dumps({"keys": entries}, indent=2) + "\n")
    os.replace(tmp, keys_dir / METADATA_FILE)


def _write_private_key(keys_dir: Path, kid: str, private_key) -> None:
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = keys_dir / f"{kid}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.chmod(path, 0o600)


def _add_key(keys_dir: Path, entries: list[dict], alg: str) -> dict:
    private_key = _generate_private_key(alg)
    kid = thumbprint(public_jwk(private_key.public_key()))
    _write_private_key(keys_dir, kid, private_key)
    entry = {"kid": kid, "alg": alg, "state": ACTIVE, "created_at": _now_iso()}
    entries.append(entry)
    return entry


def ensure_active_key(keys_dir: Path, alg: str) -> bool:
    """Generate a first key if the folder has no active one; True if one was made."""
    with _locked(keys_dir):
        entries = _read_metadata(keys_dir)
        if any(entry["state"] == ACTIVE for entry in entries):
            return False
        _add_key(keys_dir, entries, alg)
        _write_metadata(keys_dir, entries)
        return True


def rotate(keys_dir: Path, alg: str) -> tuple[str | None, str]:
    """Make a new active key; the old active one becomes retiring. Returns (old kid, new kid)."""
    with _locked(keys_dir):
        entries = _read_metadata(keys_dir)
        old = None
        for entry in entries:
            if entry["state"] == ACTIVE:
                entry["state"] = RETIRING
                entry["retiring_since"] = _now_iso()
                old = entry["kid"]
        new = _add_key(keys_dir, entries, alg)
        _write_metadata(keys_dir, entries)
        return old, new["kid"]


def prune(keys_dir: Path, older_than_seconds: int) -> list[str]:
    """Retire every retiring key whose tokens have all expired; delete its private PEM."""
    cutoff = time.time() - older_than_seconds
    retired = []
    with _locked(keys_dir):
        entries = _read_metadata(keys_dir)
        for entry in entries:
            since = entry.get("retiring_since")
            if entry["state"] != RETIRING or since is None:
                continue
            if datetime.fromisoformat(since).timestamp() <= cutoff:
                entry["state"] = RETIRED
                entry["retired_at"] = _now_iso()
                retired.append(entry["kid"])
        if retired:
            # Metadata first: a process reloading now must not find a listed key's PEM gone.
            _write_metadata(keys_dir, entries)
            for kid in retired:
                (keys_dir / f"{kid}.pem").unlink(missing_ok=True)
    return retired


def list_keys(keys_dir: Path) -> list[dict]:
    """The metadata of every key, retired ones included, oldest first."""
    return _read_metadata(Path(keys_dir))


def _load_key(keys_dir: Path, entry: dict) -> SigningKey:
    path = keys_dir / f"{entry['kid']}.pem"
    try:
        private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as error:
        raise KeysError(f"cannot load signing key {path}: {error}") from None
    jwk = public_jwk(private_key.public_key())
    if thumbprint(jwk) != entry["kid"]:
        raise KeysError(f"{path} does not match its kid")
    jwk.update(kid=entry["kid"], alg=entry["alg"], use="sig")
    return SigningKey(
        kid=entry["kid"],
        alg=entry["alg"],
        state=entry["state"],
        private_key=private_key,
        public_jwk=jwk,
        created_at=entry["created_at"],
        retiring_since=entry.get("retiring_since"),
    )


class KeyRing:
    """The keys of one process, parsed once and reloaded only when keys.json changes."""

    def __init__(self, keys_dir: str | os.PathLike):
        self.keys_dir = Path(keys_dir)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked_at = 0.0
        self._active: SigningKey | None = None
        self._published: list[SigningKey] = []
        self._jwks: dict = {"keys": []}
        self.reload()

    def reload(self) -> None:
        """Parse keys.json and every active or retiring key."""
        path = self.keys_dir / METADATA_FILE
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise KeysError(f"no signing keys in {self.keys_dir}; run `authserver init`") from None
        entries = _read_metadata(self.keys_dir)
        published = [
            _load_key(self.keys_dir, entry)
            for entry in entries
            if entry["state"] in (ACTIVE, RETIRING)
        ]
        active = [key for key in published if key.state == ACTIVE]
        if len(active) != 1:
            raise KeysError(f"{path} must have exactly one active key, has {len(active)}")
        self._active = active[0]
        self._published = published
        self._jwks = {"keys": [key.public_jwk for key in published]}
        self._stamp = (stat.st_mtime_ns, stat.st_ino)

    def _refresh(self) -> None:
        """Reload if keys.json changed, looking at most once per RELOAD_CHECK_SECONDS."""
        now = time.monotonic()
        if now - self._checked_at < RELOAD_CHECK_SECONDS:
            return
        with self._lock:
            if now - self._checked_at < RELOAD_CHECK_SECONDS:
                return
            self._checked_at = now
            try:
                stat = (self.keys_dir / METADATA_FILE).stat()
            except FileNotFoundError:
                return  # keep serving with the keys already loaded
            if (stat.st_mtime_ns, stat.st_ino) != self._stamp:
                try:
                    self.reload()
                except KeysError as error:
                    # A change caught mid-way (e.g. a PEM pruned after we read keys.json):
                    # keep signing with the keys we have and look again next time.
                    log.warning("signing keys not reloaded: %s", error)

    def active(self) -> SigningKey:
        """The key that signs new tokens."""
        self._refresh()
        return self._active

    def published(self) -> list[SigningKey]:
        """Every key whose tokens may still be valid (active and retiring)."""
        self._refresh()
        return list(self._published)

    def jwks(self) -> dict:
        """The public JWK Set."""
        self._refresh()
        return self._jwks
