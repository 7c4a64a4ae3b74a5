"""Encryption at rest for the store: which fields are sealed, under which key, with which
associated data. No I/O: the store shells load each user's wrapped data key into a ``Sealer``
(``unlock``) before its values are written or read.

With a master key configured, a memory's ``text``, ``name`` and ``metadata`` are stored as
AES-256-GCM tokens under the user's data key, bound to (user, memory id, field): a token
copied into another field, memory or user fails authentication. The keyword index then holds
no words, only keyed digests of them (``kw``, see ``security._blind``). Chat-history
messages and audit-trail entries are sealed the same way, bound to their session and change.

Not encrypted: vectors (RediSearch must compare them), ids, the user and session tags,
kinds, roles, timestamps, importance and recall counts.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from ..exceptions import DataKeyMissingError, DecryptionError
from ..security import (
    KeyChain,
    MasterKey,
    ValueCipher,
    blind_tokens,
    is_encrypted,
    keyword_tokens,
    new_data_key,
    rewrap_data_key,
    unwrap_data_key,
    value_key_id,
    wrap_data_key,
)
from ._records import MEMORY_FIELDS, decode_tag, encode_tag

SEALED_FIELDS = ("name", "text", "metadata")
# Positions of the sealed fields in MEMORY_FIELDS (the order every read path decodes in).
_POSITIONS = tuple(MEMORY_FIELDS.index(f) for f in SEALED_FIELDS)
BLIND_FIELD = "kw"
_WORD = re.compile(r"\w+", re.UNICODE)


def data_key_name(prefix: str, user_id: str) -> str:
    """Where a user's wrapped data key lives. Never in a backup: ``forget_user`` deletes it,
    and with it every copy of the user's encrypted data (crypto-shredding)."""
    return f"{prefix}:dek:{{{encode_tag(user_id)}}}"


class Sealer:
    """One engine's data keys (unwrapped, in memory) and the sealing of values with them."""

    def __init__(self, chain: KeyChain, prefix: str):
        self.chain = chain
        self.prefix = prefix
        self._ciphers: dict[str, tuple[ValueCipher, bytes]] = {}
        self._wrapped: dict[str, bytes] = {}
        self._lock = threading.Lock()

    # -- data keys ------------------------------------------------------------------------

    def key_name(self, user_id: str) -> str:
        return data_key_name(self.prefix, user_id)

    def unlocked(self, user_id: str) -> bool:
        return user_id in self._ciphers

    def new_wrapped(self, user_id: str) -> str:
        """A fresh data key for ``user_id``, wrapped by the current master key."""
        return wrap_data_key(self.chain, encode_tag(user_id), new_data_key())

    def adopt(self, user_id: str, wrapped: str | bytes) -> None:
        """Unwrap the user's stored data key (unless it is the one already held) and keep it
        for this engine's reads and writes."""
        raw = wrapped.encode() if isinstance(wrapped, str) else bytes(wrapped)
        if self._wrapped.get(user_id) == raw:
            return
        dek = unwrap_data_key(self.chain, encode_tag(user_id), raw)
        with self._lock:
            self._ciphers[user_id] = (ValueCipher(dek), dek.blind_key)
            self._wrapped[user_id] = raw

    def rotation(self, new: MasterKey) -> KeyChain:
        """The key chain after rotating to ``new``: it wraps, every known key unwraps."""
        old = (self.chain.current, *self.chain.previous)
        return KeyChain(new, tuple(k for k in old if k.key_id != new.key_id))

    @staticmethod
    def rewrapped(chain: KeyChain, key_name: str, wrapped: str | bytes) -> str:
        """A stored data key (at ``key_name``) re-wrapped under ``chain.current``."""
        tag = key_name[key_name.index("{") + 1 : key_name.rindex("}")]
        return rewrap_data_key(chain, tag, wrapped)

    def drop(self, user_id: str) -> None:
        with self._lock:
            self._ciphers.pop(user_id, None)
            self._wrapped.pop(user_id, None)

    def cipher(self, user_id: str) -> ValueCipher:
        got = self._ciphers.get(user_id)
        if got is None:
            raise DataKeyMissingError(
                f"no data key is loaded for user {user_id!r}: it was forgotten, or never had "
                "encrypted data")
        return got[0]

    def blind_key(self, user_id: str) -> bytes:
        self.cipher(user_id)
        return self._ciphers[user_id][1]

    # -- memories -------------------------------------------------------------------------

    @staticmethod
    def _aad(user_id: str, record: str, field: str) -> str:
        return f"{encode_tag(user_id)}\x00{record}\x00{field}"

    def seal_hash(
        self, user_id: str, memory_id: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """A memory's HASH fields with the sealed ones encrypted and the keyword context
        replaced by the blind index (``kw``) of text, speaker and context."""
        cipher = self.cipher(user_id)
        out = dict(fields)
        context = out.pop("context", None)
        words = [str(fields.get("name") or ""), str(fields["text"]), str(context or "")]
        out[BLIND_FIELD] = ",".join(blind_tokens(
            self.blind_key(user_id), keyword_tokens(" ".join(words))))
        for name in SEALED_FIELDS:
            if name in out:
                out[name] = cipher.encrypt(str(out[name]), self._aad(user_id, memory_id, name))
        return out

    def open_row(self, memory_id: str, values: list[str]) -> list[str]:
        """Decoded ``MEMORY_FIELDS`` values with the sealed ones decrypted (in place)."""
        user_id = decode_tag(values[0])
        for position, name in zip(_POSITIONS, SEALED_FIELDS, strict=True):
            values[position] = self.open(user_id, memory_id, name, values[position])
        return values

    def open(self, user_id: str, record: str, field: str, value: str | bytes) -> str:
        """One sealed value, decrypted; a plaintext or tampered value raises
        ``DecryptionError``, a value under a destroyed data key ``DataKeyMissingError``."""
        if not is_encrypted(value):
            raise DecryptionError(
                f"{field} of {record} (user {user_id!r}) is not encrypted although encryption "
                "is on: it was written without the master key, or replaced")
        cipher = self._for_token(user_id, value)
        return cipher.decrypt(value, self._aad(user_id, record, field))

    def _for_token(self, user_id: str, token: str | bytes) -> ValueCipher:
        got = self._ciphers.get(user_id)
        key_id = value_key_id(token)
        if got is None or got[0].key_id != key_id:
            raise DataKeyMissingError(
                f"user {user_id!r}'s data is encrypted under data key {key_id}, which no longer "
                "exists (the user was forgotten: crypto-shredded) and cannot be decrypted")
        return got[0]

    def query_digests(self, user_id: str, query: str, drop: frozenset[str]) -> list[str]:
        """The blind-index digests a keyword query looks for: its words less ``drop``
        (question words) unless nothing else is left, stemmed and keyed like the index.
        A user without a data key has no blind index: nothing to look for."""
        if not self.unlocked(user_id):
            return []
        words = _WORD.findall(query.lower())
        kept = [w for w in words if w not in drop] or words
        return blind_tokens(self.blind_key(user_id), keyword_tokens(" ".join(kept)))

    # -- other records (chat history, audit trail) ----------------------------------------

    def seal_text(self, user_id: str, record: str, kind: str, text: str) -> str:
        return self.cipher(user_id).encrypt(text, self._aad(user_id, record, kind))

    def open_text(self, user_id: str, record: str, kind: str, token: str | bytes) -> str:
        return self.open(user_id, record, kind, token)
