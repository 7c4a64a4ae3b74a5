"""Master keys: generating, parsing and loading them from the configuration.

The master key never encrypts data itself: it only wraps each user's data key (see
``_envelope``). A master key is known by its ``key_id``, a keyed digest that names the key in
every wrapped data key without revealing it, so a key chain of the current key and the
previous ones can unwrap data keys wrapped by any of them while a rotation re-wraps them.

Key material never appears in a ``repr`` or in an error message; errors say the length found.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..exceptions import DataKeyMissingError, KeyConfigurationError

if TYPE_CHECKING:
    from ..config import EngineConfig

KEY_BYTES = 32
_KEY_ID_INFO = b"memory-engine master key id"
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")
_HINT = "32 random bytes in URL-safe base64 (`memory-engine keygen` prints one)"


def generate_master_key() -> str:
    """A new random master key: 32 bytes as URL-safe base64 with padding (44 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def _master_key_id(key: bytes) -> str:
    return hmac.new(key, _KEY_ID_INFO, hashlib.sha256).digest()[:8].hex()


@dataclass(frozen=True, slots=True)
class MasterKey:
    """A 32-byte master key and its public id.

    Attributes:
        key: The key bytes; left out of ``repr``.
        key_id: 16 hex characters, the first 8 bytes of HMAC-SHA256(key, a fixed label);
            derived from ``key`` when left empty, and checked against it when given.
    """

    key: bytes = field(repr=False)
    key_id: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != KEY_BYTES:
            found = len(self.key) if isinstance(self.key, bytes | bytearray) else "no"
            raise KeyConfigurationError(f"a master key must be {_HINT}; got {found} bytes")
        expected = _master_key_id(self.key)
        if not self.key_id:
            object.__setattr__(self, "key_id", expected)
        elif not hmac.compare_digest(self.key_id, expected):
            raise KeyConfigurationError(f"master key id {self.key_id!r} does not match the key")

    @classmethod
    def parse(cls, text: str | bytes) -> MasterKey:
        """Read a master key from its URL-safe base64 text or from its 32 raw bytes.

        Surrounding whitespace is ignored and the ``=`` padding is optional.

        Raises:
            KeyConfigurationError: Not 32 bytes once decoded, or not URL-safe base64. The
                message gives the length found, never the key text.
        """
        if isinstance(text, bytes | bytearray):
            if len(text) == KEY_BYTES:
                return cls(bytes(text))
            try:
                text = bytes(text).decode("ascii")
            except UnicodeDecodeError:
                raise KeyConfigurationError(
                    f"the master key must be {_HINT}; got {len(text)} bytes that are neither "
                    f"{KEY_BYTES} raw bytes nor base64 text") from None
        if not isinstance(text, str):
            raise KeyConfigurationError(
                f"the master key must be text or bytes, not {type(text).__name__}")
        stripped = text.strip()
        if not stripped:
            raise KeyConfigurationError(f"the master key is empty; it must be {_HINT}")
        if not _BASE64URL.match(stripped):
            raise KeyConfigurationError(
                f"the master key ({len(stripped)} characters) is not URL-safe base64 "
                f"(A-Z, a-z, 0-9, '-', '_'); it must be {_HINT}")
        body = stripped.rstrip("=")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError:  # binascii.Error: a length no base64 text can have
            raise KeyConfigurationError(
                f"the master key ({len(stripped)} characters) is not valid base64; "
                f"it must be {_HINT}") from None
        if len(raw) != KEY_BYTES:
            raise KeyConfigurationError(
                f"the master key decodes to {len(raw)} bytes ({len(stripped)} characters); "
                f"it must be {_HINT}")
        return cls(raw)


@dataclass(frozen=True)
class KeyChain:
    """The current master key, which wraps every new data key, and older ones that may still
    unwrap data keys until ``rotate-key`` has re-wrapped them."""

    current: MasterKey
    previous: tuple[MasterKey, ...] = ()

    def by_id(self, key_id: str) -> MasterKey:
        """The configured master key with this id.

        Raises:
            DataKeyMissingError: No configured key has this id.
        """
        for key in (self.current, *self.previous):
            if key.key_id == key_id:
                return key
        raise DataKeyMissingError(
            f"the data key is wrapped by master key {key_id}, which is not configured "
            f"(set previous_master_keys to include it, then run `memory-engine rotate-key`); "
            f"configured: {', '.join(self.ids)}")

    @property
    def ids(self) -> tuple[str, ...]:
        """The ids of the current key and then the previous ones."""
        return tuple(k.key_id for k in (self.current, *self.previous))


def _read_key_file(path: os.PathLike[str] | str) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeyConfigurationError(f"master_key_file {path} does not exist") from None
    except OSError as exc:
        raise KeyConfigurationError(f"master_key_file {path} cannot be read: {exc}") from exc
    if os.name == "posix" and st.st_mode & 0o077:
        raise KeyConfigurationError(
            f"master_key_file {path} can be read by other users (mode "
            f"{st.st_mode & 0o777:o}); restrict it with: chmod 600 {path}")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise KeyConfigurationError(f"master_key_file {path} cannot be read: {exc}") from exc


def _parse_from(source: str, text: str | bytes) -> MasterKey:
    try:
        return MasterKey.parse(text)
    except KeyConfigurationError as exc:
        raise KeyConfigurationError(f"{source}: {exc}") from exc


def load_key_chain(config: EngineConfig) -> KeyChain | None:
    """The key chain the configuration describes, or None when encryption is off.

    The current key comes from ``master_key``, ``master_key_file`` or ``key_provider`` (called
    once here). ``previous_master_keys`` are added after it, without duplicates or the
    current key.

    Raises:
        KeyConfigurationError: A key is malformed, the key file is missing, unreadable or
            open to group/other users, or the key provider failed (its error is chained).
    """
    if not config.encrypted:
        return None
    if config.master_key is not None:
        current = _parse_from("master_key", config.master_key)
    elif config.master_key_file is not None:
        path = config.master_key_file
        current = _parse_from(f"master_key_file {path}", _read_key_file(path))
    else:
        provider = config.key_provider
        assert provider is not None  # config.encrypted guarantees one source
        try:
            supplied = provider()
        except Exception as exc:  # any failure of user code becomes one typed error
            raise KeyConfigurationError(
                f"key_provider failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(supplied, str | bytes | bytearray):
            raise KeyConfigurationError(
                f"key_provider returned {type(supplied).__name__}; it must return the master "
                f"key as bytes or base64 text")
        current = _parse_from("key_provider", supplied)
    previous: list[MasterKey] = []
    seen = {current.key_id}
    for i, text in enumerate(config.previous_master_keys):
        key = _parse_from(f"previous_master_keys[{i}]", text)
        if key.key_id not in seen:
            seen.add(key.key_id)
            previous.append(key)
    return KeyChain(current, tuple(previous))
