"""Encryption at rest, as pure primitives: no Redis, no I/O beyond reading a key file.

Envelope encryption: a master key (``_keys``) wraps one random data key per user; values are
sealed with AES-256-GCM under a sub-key of that data key, and carry its id, so a master key
rotates by re-wrapping data keys only, with no re-encryption or re-embedding (``_envelope``).
Associated data binds each value to its record, so a ciphertext copied to another field,
memory or user fails authentication. Keyword search works on a blind index of keyed token
digests (``_blind``): the server sees which of one user's memories share a word, and how often,
but not the word. Deleting a user's data key makes their values and index unreadable.
"""

from ._blind import STOPWORDS, blind_text, blind_tokens, keyword_tokens
from ._envelope import (
    DataKey,
    ValueCipher,
    is_encrypted,
    new_data_key,
    rewrap_data_key,
    unwrap_data_key,
    value_key_id,
    wrap_data_key,
    wrapped_master_id,
)
from ._keys import KeyChain, MasterKey, generate_master_key, load_key_chain

__all__ = [
    "STOPWORDS",
    "DataKey",
    "KeyChain",
    "MasterKey",
    "ValueCipher",
    "blind_text",
    "blind_tokens",
    "generate_master_key",
    "is_encrypted",
    "keyword_tokens",
    "load_key_chain",
    "new_data_key",
    "rewrap_data_key",
    "unwrap_data_key",
    "value_key_id",
    "wrap_data_key",
    "wrapped_master_id",
]
