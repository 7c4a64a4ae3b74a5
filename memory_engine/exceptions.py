"""The exceptions memory-engine raises.

Every error derives from one root, so ``except MemoryEngineError`` catches them all::

    MemoryEngineError
    ├── ConfigurationError              bad or contradictory settings
    │   └── MissingDependencyError      an optional package is not installed (names the install)
    ├── ServerError                     Redis could not be reached, started or used
    │   ├── RedisNotFoundError          no search-capable redis-server binary was found
    │   ├── ServerStartError            a redis-server was found but did not come up
    │   └── SearchModuleMissingError    the Redis we talk to has no search module (FT._LIST)
    ├── StoreError                      a Redis command failed (the cause is chained)
    │   └── SchemaMismatchError         the existing index differs from the configured schema
    ├── EmbeddingError                  the embedder failed or returned something unusable
    ├── MemoryNotFoundError             no memory with that id for that user
    ├── ChangeNotFoundError             no audit-trail change with that id for that user
    ├── SummarizerError                 a summarizer failed; that group was left unchanged
    └── InvalidInputError               bad input; raised before anything is written
        ├── InvalidUserIdError
        ├── InvalidTextError            empty, whitespace-only or over the maximum length
        ├── InvalidMemoryIdError        not a memory id this engine could have issued
        ├── EmbeddingDimensionError     a vector of the wrong size or with non-finite values
        ├── InvalidModeError            an unknown search mode
        └── InvalidArgumentError        any other out-of-range argument (``k``, times, ...)

``InvalidInputError`` is also a ``ValueError`` and ``MemoryNotFoundError`` a ``KeyError``,
so code written against the built-in exceptions keeps working.
"""

from __future__ import annotations


class MemoryEngineError(Exception):
    """Root of every error raised by memory-engine."""


class ConfigurationError(MemoryEngineError):
    """A setting is missing, malformed or contradicts another one."""


class MissingDependencyError(ConfigurationError, ImportError):
    """An optional dependency is needed for this feature but is not installed."""

    def __init__(self, package: str, *, extra: str | None = None, feature: str = "") -> None:
        install = f"pip install 'memory-engine[{extra}]'" if extra else f"pip install {package}"
        what = f" for {feature}" if feature else ""
        super().__init__(f"The package '{package}' is needed{what} but is not installed: {install}")
        self.package = package


class ServerError(MemoryEngineError):
    """Redis could not be reached, started or used."""


class RedisNotFoundError(ServerError):
    """No redis-server binary with the search module could be found."""


class ServerStartError(ServerError):
    """A redis-server binary was found but the server did not come up."""


class SearchModuleMissingError(ServerError):
    """The Redis server does not have the search module (``FT._LIST`` is unknown)."""


class StoreError(MemoryEngineError):
    """A Redis command failed; the original error is chained as ``__cause__``."""


class SchemaMismatchError(StoreError):
    """The index in Redis was created with a different schema than the one configured."""


class EmbeddingError(MemoryEngineError):
    """The embedder failed or returned something that cannot be stored."""


class MemoryNotFoundError(MemoryEngineError, KeyError):
    """No memory with this id exists for this user."""

    def __init__(self, user_id: str, memory_id: str) -> None:
        super().__init__(f"no memory {memory_id!r} for user {user_id!r}")
        self.user_id = user_id
        self.memory_id = memory_id

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class InvalidInputError(MemoryEngineError, ValueError):
    """Input was rejected before anything was written."""


class InvalidUserIdError(InvalidInputError):
    """The user id is missing, empty, too long or not a string."""


class InvalidTextError(InvalidInputError):
    """Memory or query text is empty, whitespace-only or longer than allowed."""


class InvalidMemoryIdError(InvalidInputError):
    """The memory id is not one this engine could have issued."""


class EmbeddingDimensionError(InvalidInputError):
    """An embedding has the wrong number of dimensions or non-finite values."""


class InvalidModeError(InvalidInputError):
    """The search mode is not one of the supported modes."""


class InvalidArgumentError(InvalidInputError):
    """An argument is out of range or of the wrong type."""


class ChangeNotFoundError(MemoryEngineError, KeyError):
    """No audit-trail entry with this change id exists for this user (or it has expired)."""

    def __init__(self, user_id: str, change_id: str) -> None:
        super().__init__(f"no change {change_id!r} in the audit trail of user {user_id!r} "
                         "(never made, or older than the audit retention)")
        self.user_id = user_id
        self.change_id = change_id

    def __str__(self) -> str:
        return str(self.args[0])


class SummarizerError(MemoryEngineError):
    """The summarizer failed or returned nothing; nothing of that group was changed."""


class EncryptionError(MemoryEngineError):
    """Encryption at rest failed: a bad or missing key, or a value that does not decrypt."""


class KeyConfigurationError(EncryptionError, ConfigurationError):
    """The master key setting is malformed (not 32 bytes of URL-safe base64), unreadable, or
    its file is readable by other users."""


class DecryptionError(EncryptionError):
    """A stored value failed authentication: tampered with, moved to another record, or
    encrypted under a different key. It is never returned as data."""


class DataKeyMissingError(EncryptionError):
    """The user's data key is gone (the user was forgotten: crypto-shredded), or is wrapped
    by a master key that is not configured; their encrypted data cannot be read."""


class BackupError(MemoryEngineError):
    """A backup or restore failed: the destination is unreachable, a checksum does not
    match, or the snapshot is from another schema version."""
