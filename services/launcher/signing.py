"""The key that signs instance records, and the HMAC over them.

Records are Secrets in the user's own namespace, where the user can edit them; a record
is only believed when its HMAC-SHA256, made with a key the user never sees, verifies. The
launcher and the culler must share the key (both act on records): it comes from a setting,
an environment variable or a file (a mounted Kubernetes Secret). Without one, a random key
is made once per process and a warning says so: fine for the demo and the tests, where the
launcher and the culler code run in one process, wrong for a deployment (records made
before a restart would no longer verify).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("kdash_hub.launcher.signing")

KEY_ENV = "KDASH_RECORD_SIGNING_KEY"
KEY_FILE_ENV = "KDASH_RECORD_SIGNING_KEY_FILE"
MIN_KEY_LENGTH = 32
SIGNATURE_VERSION = "v1"
_DOMAIN = b"kdash-hub instance record v1\x00"


class SigningKeyError(ValueError):
    """The configured key can't be used (too short, unreadable file)."""


class RecordSigner:
    """Signs and verifies the canonical text of records (HMAC-SHA256).

    `previous_keys` only verify: records signed before a key rotation keep working
    until they are next written (then they carry the new key's signature).
    """

    def __init__(self, key: bytes, previous_keys: Sequence[bytes] = (), *,
                 ephemeral: bool = False):
        for k in (key, *previous_keys):
            if len(k) < MIN_KEY_LENGTH:
                raise SigningKeyError(
                    f"a record signing key needs at least {MIN_KEY_LENGTH} bytes; make one"
                    " with `python -c 'import secrets; print(secrets.token_hex(32))'`")
        self._key = key
        self._keys = (key, *previous_keys)
        self.ephemeral = ephemeral

    @staticmethod
    def _mac(key: bytes, message: bytes) -> str:
        return hmac.new(key, _DOMAIN + message, hashlib.sha256).hexdigest()

    def sign(self, message: bytes) -> str:
        return f"{SIGNATURE_VERSION}:{self._mac(self._key, message)}"

    def verify(self, message: bytes, signature: object) -> bool:
        if not isinstance(signature, str):
            return False
        version, _, mac = signature.partition(":")
        if version != SIGNATURE_VERSION:
            return False
        return any(hmac.compare_digest(self._mac(k, message).encode(), mac.encode("utf-8",
                                       "surrogatepass")) for k in self._keys)


def read_key(key: str = "", key_file: str = "") -> bytes | None:
    """The key from its text or from a file (trailing newline dropped); None if neither."""
    if key:
        return key.encode()
    if key_file:
        try:
            text = Path(key_file).read_bytes().rstrip(b"\r\n")
        except OSError as e:
            raise SigningKeyError(f"record signing key file {key_file}: {e.strerror}") from None
        return text
    return None


_process_key: bytes | None = None


def process_key() -> bytes:
    """A random key made once per process (logged as a warning the first time)."""
    global _process_key
    if _process_key is None:
        _process_key = secrets.token_bytes(32)
        log.warning(
            "no record signing key configured (LauncherSettings.record_signing_key(_file),"
            " $%s or $%s): using a random key for this process only. Instance records made"
            " now won't verify after a restart or in another process (the culler): set a"
            " key shared by the launcher and the culler in any real deployment.",
            KEY_ENV, KEY_FILE_ENV)
    return _process_key


def make_signer(key: str = "", key_file: str = "",
                previous_keys: Sequence[str] = ()) -> RecordSigner:
    """The signer of these settings, else of the environment, else a per-process key."""
    configured = read_key(key, key_file) or read_key(
        os.environ.get(KEY_ENV, ""), os.environ.get(KEY_FILE_ENV, ""))
    previous = [k.encode() for k in previous_keys if k]
    if configured is None:
        return RecordSigner(process_key(), previous, ephemeral=True)
    return RecordSigner(configured, previous)


def default_signer() -> RecordSigner:
    """What the culler (or any other reader of records) uses unless given a signer."""
    return make_signer()
