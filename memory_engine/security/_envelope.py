"""Envelope encryption: per-user data keys wrapped by the master key, values sealed by them.

Each user has one random data key. The master key only wraps it (AES-256-GCM, bound to the
user's tag and the data key's id), and the wrapped form is what is stored. A value is sealed
with AES-256-GCM under a sub-key derived from the data key (HKDF-SHA256), and carries the data
key's id, so rotating the master key re-wraps data keys only: no value is re-encrypted and no
embedding is recomputed. Destroying a user's wrapped data key makes all of their values, and
their blind index (``_blind``), unreadable at once (crypto-shredding).

Every value is sealed with associated data naming its record (user, memory, field), so a
ciphertext copied to another field, memory or user fails authentication instead of being
read as that record's data. Nonces are 12 random bytes; one data key seals far fewer than the
2**32 values after which random GCM nonces would risk repeating.

``ValueCipher`` and ``DataKey`` hold no mutable state and may be shared between threads.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..exceptions import DecryptionError, EncryptionError
from ._keys import KeyChain

DATA_KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
TOKEN_PREFIX = "enc1:"
BLOB_PREFIX = b"ME1"
WRAP_VERSION = 1

_ENC_INFO = b"memory-engine value encryption v1"
_BLIND_INFO = b"memory-engine blind index v1"
_WRAP_AAD = b"memory-engine data key v1\x00"
_VALUE_AAD = b"memory-engine value v1\x00"
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_FAILED = "stored value failed authentication (tampered with, or moved from another record)"


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict unpadded URL-safe base64: only the canonical encoding of some bytes passes, so
    changing any character of a token changes the bytes it decodes to."""
    if not _BASE64URL.match(text):
        raise ValueError("not unpadded URL-safe base64")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64encode(raw) != text:
        raise ValueError("not the canonical base64 encoding")
    return raw


def _derive(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


@dataclass(frozen=True)
class DataKey:
    """One user's data key and the two sub-keys derived from it.

    Attributes:
        key_id: 16 random hex characters naming this key in every value it seals.
        key: 32 random bytes; left out of ``repr``.
        enc_key: HKDF-SHA256 sub-key that seals values.
        blind_key: HKDF-SHA256 sub-key that keys the blind keyword index.
    """

    key_id: str
    key: bytes = field(repr=False)
    enc_key: bytes = field(init=False, repr=False, compare=False)
    blind_key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not _KEY_ID.match(self.key_id):
            raise EncryptionError("a data key id must be 16 lowercase hex characters")
        if not isinstance(self.key, bytes) or len(self.key) != DATA_KEY_BYTES:
            raise EncryptionError(f"a data key must be {DATA_KEY_BYTES} bytes")
        object.__setattr__(self, "enc_key", _derive(self.key, _ENC_INFO))
        object.__setattr__(self, "blind_key", _derive(self.key, _BLIND_INFO))


def new_data_key() -> DataKey:
    """A fresh random data key with a random id."""
    return DataKey(secrets.token_hex(8), secrets.token_bytes(DATA_KEY_BYTES))


def _wrap_aad(user_tag: str, data_key_id: str) -> bytes:
    return _WRAP_AAD + user_tag.encode("utf-8") + b"\x00" + data_key_id.encode("ascii")


def wrap_data_key(chain: KeyChain, user_tag: str, dek: DataKey) -> str:
    """Seal a data key under the current master key, bound to ``user_tag``.

    Returns:
        Compact JSON: ``{"v":1,"mk":master key id,"dk":data key id,"n":nonce,"ct":sealed}``
        with ``n`` and ``ct`` in unpadded URL-safe base64.
    """
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(chain.current.key).encrypt(nonce, dek.key, _wrap_aad(user_tag, dek.key_id))
    doc = {"v": WRAP_VERSION, "mk": chain.current.key_id, "dk": dek.key_id,
           "n": _b64encode(nonce), "ct": _b64encode(sealed)}
    return json.dumps(doc, separators=(",", ":"))


def _parse_wrapped(wrapped: str | bytes, owner: str) -> dict[str, str]:
    bad = f"the wrapped data key{owner} is malformed"
    try:
        doc = json.loads(wrapped)
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise DecryptionError(f"{bad}: not JSON") from exc
    if not isinstance(doc, dict):
        raise DecryptionError(f"{bad}: not a JSON object")
    if doc.get("v") != WRAP_VERSION:
        raise DecryptionError(f"{bad}: unsupported version {doc.get('v')!r}")
    fields = {}
    for name in ("mk", "dk", "n", "ct"):
        value = doc.get(name)
        if not isinstance(value, str):
            raise DecryptionError(f"{bad}: field {name!r} missing or not text")
        fields[name] = value
    return fields


def wrapped_master_id(wrapped: str | bytes) -> str:
    """The id of the master key that wrapped this data key (for rotation reports).

    Raises:
        DecryptionError: ``wrapped`` is not a wrapped data key.
    """
    return _parse_wrapped(wrapped, "")["mk"]


def unwrap_data_key(chain: KeyChain, user_tag: str, wrapped: str | bytes) -> DataKey:
    """Open a wrapped data key with whichever configured master key wrapped it.

    Raises:
        DataKeyMissingError: The master key that wrapped it is not in ``chain``.
        DecryptionError: Malformed, of an unknown version, tampered with, or wrapped for
            another user tag (the cause is chained).
    """
    fields = _parse_wrapped(wrapped, f" of user {user_tag!r}")
    master = chain.by_id(fields["mk"])
    data_key_id = fields["dk"]
    if not _KEY_ID.match(data_key_id):
        raise DecryptionError(f"the wrapped data key of user {user_tag!r} has a malformed id")
    try:
        nonce, sealed = _b64decode(fields["n"]), _b64decode(fields["ct"])
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"nonce of {len(nonce)} bytes")
        key = AESGCM(master.key).decrypt(nonce, sealed, _wrap_aad(user_tag, data_key_id))
    except (ValueError, InvalidTag) as exc:
        raise DecryptionError(
            f"the wrapped data key of user {user_tag!r} failed authentication under master "
            f"key {master.key_id} (tampered with, or wrapped for another user)") from exc
    return DataKey(data_key_id, key)


def rewrap_data_key(chain: KeyChain, user_tag: str, wrapped: str | bytes) -> str:
    """Unwrap with whichever configured key wrapped it, and wrap again under the current one.

    The data key, and so every value sealed by it, is unchanged.
    """
    return wrap_data_key(chain, user_tag, unwrap_data_key(chain, user_tag, wrapped))


def _value_aad(aad: str) -> bytes:
    return _VALUE_AAD + aad.encode("utf-8")


def is_encrypted(value: str | bytes) -> bool:
    """Whether ``value`` is a sealed value token (starts with ``enc1:``)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).startswith(TOKEN_PREFIX.encode("ascii"))
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


def _split_token(token: str | bytes) -> tuple[str, str]:
    """The data key id and the base64 body of a text token."""
    if isinstance(token, bytes | bytearray):
        try:
            token = bytes(token).decode("ascii")
        except UnicodeDecodeError:
            raise DecryptionError(f"{_FAILED}: not a sealed value token") from None
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
        raise DecryptionError(f"{_FAILED}: not a sealed value token (no {TOKEN_PREFIX!r})")
    key_id, sep, body = token[len(TOKEN_PREFIX):].partition(":")
    if not sep or not _KEY_ID.match(key_id):
        raise DecryptionError(f"{_FAILED}: malformed token")
    return key_id, body


def value_key_id(token: str | bytes) -> str:
    """The id of the data key that sealed a value token (or a ``ME1`` binary blob).

    Raises:
        DecryptionError: ``token`` is malformed.
    """
    if isinstance(token, bytes | bytearray) and bytes(token).startswith(BLOB_PREFIX):
        key_id = bytes(token)[len(BLOB_PREFIX):len(BLOB_PREFIX) + 16].decode("ascii", "replace")
        if not _KEY_ID.match(key_id):
            raise DecryptionError(f"{_FAILED}: malformed blob")
        return key_id
    return _split_token(token)[0]


class ValueCipher:
    """Encrypts one user's values under one data key.

    ``aad`` names the record a value belongs to (for example user, memory id and field); the
    same ``aad`` must be given to decrypt, so a value moved elsewhere fails authentication.
    """

    __slots__ = ("_aead", "key_id")

    def __init__(self, dek: DataKey) -> None:
        self.key_id: str = dek.key_id
        self._aead = AESGCM(dek.enc_key)

    def __repr__(self) -> str:
        return f"ValueCipher(key_id={self.key_id!r})"

    def _seal(self, plaintext: bytes, aad: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, _value_aad(aad))

    def _open(self, key_id: str, sealed: bytes, aad: str) -> bytes:
        context = f"data key {key_id}, record {aad!r}"
        if key_id != self.key_id:
            raise DecryptionError(
                f"{_FAILED}: sealed by data key {key_id}, not this user's {self.key_id} "
                f"(record {aad!r})")
        if len(sealed) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionError(f"{_FAILED}: truncated ({context})")
        nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, body, _value_aad(aad))
        except InvalidTag as exc:
            raise DecryptionError(f"{_FAILED} ({context})") from exc

    def encrypt(self, plaintext: str, aad: str) -> str:
        """Seal text as ``enc1:<data key id>:<base64url(nonce + ciphertext + tag)>``.

        Raises:
            EncryptionError: ``plaintext`` is not encodable as UTF-8 (a lone surrogate).
        """
        try:
            raw = plaintext.encode("utf-8")
        except UnicodeEncodeError:
            raise EncryptionError("a value to encrypt is not valid text (lone surrogate)") from None
        return f"{TOKEN_PREFIX}{self.key_id}:{_b64encode(self._seal(raw, aad))}"

    def encrypt_bytes(self, plaintext: bytes, aad: str) -> bytes:
        """Seal bytes as ``b"ME1" + data key id + nonce + ciphertext + tag`` (backup files)."""
        return BLOB_PREFIX + self.key_id.encode("ascii") + self._seal(plaintext, aad)

    def decrypt(self, token: str | bytes, aad: str) -> str:
        """Open a token made by ``encrypt`` with the same ``aad``.

        Raises:
            DecryptionError: Malformed, sealed by another data key, tampered with, or sealed
                for another record. The plaintext is never part of the message.
        """
        key_id, body = _split_token(token)
        try:
            sealed = _b64decode(body)
        except ValueError:
            raise DecryptionError(f"{_FAILED}: malformed token (data key {key_id})") from None
        raw = self._open(key_id, sealed, aad)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:  # authentic, but sealed from bytes, not from text
            raise DecryptionError(
                f"{_FAILED}: not text (data key {key_id}, record {aad!r})") from None

    def decrypt_bytes(self, blob: bytes, aad: str) -> bytes:
        """Open a blob made by ``encrypt_bytes`` with the same ``aad``.

        Raises:
            DecryptionError: As for ``decrypt``.
        """
        blob = bytes(blob)
        if not blob.startswith(BLOB_PREFIX):
            raise DecryptionError(f"{_FAILED}: not a sealed blob (no {BLOB_PREFIX!r})")
        key_id = value_key_id(blob)
        return self._open(key_id, blob[len(BLOB_PREFIX) + 16:], aad)
