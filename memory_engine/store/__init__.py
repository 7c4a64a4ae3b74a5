"""Storage: the redisvl schema, HASH records, an I/O-free core and thin sync/async shells."""

from ._aio import AsyncMemoryStore
from ._core import StoreCore, StoreSettings
from ._records import KeySpace, decode_tag, encode_tag, is_memory_id, new_id
from ._schema import SCHEMA_VERSION
from ._sync import MemoryStore

__all__ = [
    "SCHEMA_VERSION",
    "AsyncMemoryStore",
    "KeySpace",
    "MemoryStore",
    "StoreCore",
    "StoreSettings",
    "decode_tag",
    "encode_tag",
    "is_memory_id",
    "new_id",
]
