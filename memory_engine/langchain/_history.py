"""``MemoryChatMessageHistory``: a drop-in for langchain-redis's ``RedisChatMessageHistory``
that also writes every human and AI turn to the user's long-term memory."""

from __future__ import annotations

import asyncio
import atexit
import json
import ssl
import threading
import weakref
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    message_to_dict,
    messages_from_dict,
)

from .. import _validation as check
from ..config import EngineConfig
from ..embeddings import CachedEmbedder, SentenceTransformerEmbedder
from ..engine import AsyncMemoryEngine, MemoryEngine
from ..exceptions import InvalidArgumentError
from ..models import Kind, NewMemory, Role

DEFAULT_KEY_PREFIX = "chat:"

# Histories built without an engine share one per configuration (RunnableWithMessageHistory
# builds a new history for every call; each must not load the model again). Closed at exit,
# which also writes the long-term memories still queued.
_engines: dict[EngineConfig, MemoryEngine] = {}
# One model load per model, not per index.
_embedders: dict[tuple[str | None, int], CachedEmbedder] = {}
_async_engines: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[EngineConfig, AsyncMemoryEngine]
] = weakref.WeakKeyDictionary()
_engines_lock = threading.Lock()


def shared_engine(config: EngineConfig) -> MemoryEngine:
    """The process's engine for ``config`` (created on first use, closed at exit)."""
    with _engines_lock:
        engine = _engines.get(config)
        if engine is None:
            if not _engines:
                atexit.register(_close_shared)
            model = (config.embedding_model, config.embedding_batch_size)
            embedder = _embedders.get(model)
            if embedder is None:
                embedder = _embedders[model] = CachedEmbedder(SentenceTransformerEmbedder(
                    config.embedding_model, batch_size=config.embedding_batch_size),
                    config.query_cache_size)
            engine = _engines[config] = MemoryEngine(config, embedder=embedder)
        return engine


def _close_shared() -> None:
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.close()


def _url_of(client: Any) -> str:
    """A URL for an existing redis-py client's server (host, port, db and credentials)."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if not isinstance(kwargs, dict) or "host" not in kwargs:
        raise InvalidArgumentError(
            "redis_client must be a redis.Redis connected over TCP; pass redis_url instead")
    auth = ""
    if kwargs.get("password"):
        auth = f"{quote(str(kwargs.get('username') or ''), safe='')}:" \
               f"{quote(str(kwargs['password']), safe='')}@"
    tls = bool(kwargs.get("ssl")) or "ssl_cert_reqs" in kwargs
    scheme = "rediss" if tls else "redis"
    base = f"{scheme}://{auth}{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    options = {}
    for name in _TLS_OPTIONS if tls else ():
        value = kwargs.get(name)
        if value is None:
            continue
        if isinstance(value, ssl.VerifyMode):
            value = {ssl.CERT_NONE: "none", ssl.CERT_OPTIONAL: "optional"}.get(value, "required")
        options[name] = str(value)
    return f"{base}?{urlencode(options)}" if options else base


# What a TLS client's URL must carry over (a private CA, client certificates, checks).
_TLS_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile",
                "ssl_password", "ssl_check_hostname")


def message_text(message: BaseMessage) -> str:
    """The text of a message whose content is a string or a list of parts."""
    content = message.content
    if isinstance(content, str):
        return content
    return " ".join(
        part if isinstance(part, str) else str(part.get("text", ""))
        for part in content
        if isinstance(part, str) or part.get("type") == "text"
    )


class MemoryChatMessageHistory(BaseChatMessageHistory):
    """One chat session's messages in Redis, plus long-term memory across sessions.

    Takes the constructor arguments of langchain-redis's ``RedisChatMessageHistory``, so the
    article's examples work by changing the import; ``user_id`` is the one addition to make.

    * ``messages`` returns every message of the session in order: no cap, no truncation.
      Every LangChain message type round-trips with its ``additional_kwargs``,
      ``response_metadata``, ``id``, ``name`` and tool calls.
    * ``ttl`` (seconds): each message expires ``ttl`` seconds after it was written, as in
      langchain-redis. Reads do not refresh it.
    * Each human and AI message with text is also queued for the user's long-term memory
      (kind ``turn``, role ``user``/``assistant``, this ``session_id``): it is embedded and
      written in batches by a background thread, so ``add_message`` never waits for the
      model. ``engine.flush()`` waits for the queue. Long-term memories outlive ``clear()``
      and ``ttl``; ``engine.forget_user`` removes both.
    * Histories are keyed by user *and* session: ``user_1``/``session_1`` and
      ``user_2``/``session_1`` never share a message.

    Args:
        session_id: The conversation.
        redis_url: A Redis with the search module; default: the engine's configuration
            (``MEMORY_ENGINE_REDIS_URL``, else the embedded server).
        key_prefix: Namespace of the session within the user's history (default ``"chat:"``).
        ttl: Seconds each message lives; None (default) keeps them.
        index_name: The memory index to use (also its key prefix); default: the engine's.
        redis_client: An existing ``redis.Redis``; its server is used (like ``redis_url``).
        user_id: Whose conversation this is. Default: the ``session_id`` itself, so sessions
            without a user never see each other's memories; pass it to recall across
            sessions.
        engine: The ``MemoryEngine`` to use; default: one shared per configuration.
        async_engine: The ``AsyncMemoryEngine`` the async methods use; default: one per
            event loop and configuration.
        remember: Write human and AI turns to long-term memory (default True).
        **kwargs: Not supported (langchain-redis passes them to its Redis client): put
            client options in the URL; any given raise ``InvalidArgumentError``.
    """

    def __init__(
        self,
        session_id: str,
        redis_url: str | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        ttl: int | None = None,
        index_name: str | None = None,
        redis_client: Any = None,
        *,
        user_id: str | None = None,
        engine: MemoryEngine | None = None,
        async_engine: AsyncMemoryEngine | None = None,
        remember: bool = True,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise InvalidArgumentError(
                f"unsupported arguments {sorted(kwargs)}: Redis client options go in the "
                "redis_url query string (e.g. ?socket_timeout=5)")
        session = check.session_id(session_id)
        if session is None:
            raise InvalidArgumentError("session_id is required")
        if not isinstance(key_prefix, str):
            raise InvalidArgumentError("key_prefix must be a string")
        self.session_id = session
        self.user_id = check.user_id(session if user_id is None else user_id)
        self.key_prefix = key_prefix
        self.ttl = check.ttl(ttl)
        self.remember = bool(remember)
        self._chat_session = key_prefix + session  # where the messages live for this user
        if engine is not None and (redis_url or redis_client or index_name):
            raise InvalidArgumentError(
                "pass either engine or redis_url / redis_client / index_name, not both")
        if engine is None:
            config = EngineConfig.from_env()
            if redis_client is not None:
                redis_url = _url_of(redis_client)
            if redis_url:
                config = config.with_(redis_url=redis_url)
            if index_name:
                config = config.with_(index_name=index_name, key_prefix=index_name)
            engine = shared_engine(config)
        self.engine = engine
        self._async_engine = async_engine

    # --- sync -------------------------------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """Every message of the session, oldest first."""
        stored = self.engine.history_read(self.user_id, self._chat_session)
        return self._decode(stored)

    def add_message(self, message: BaseMessage) -> None:
        """Store one message (and queue it for long-term memory)."""
        self.add_messages([message])

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Store messages in one round trip (and queue the turns for long-term memory)."""
        payloads = self._encode(messages)
        if not payloads:
            return
        first = self.engine.history_append(
            self.user_id, self._chat_session, payloads, ttl=self.ttl)
        self._remember(messages, first)

    def clear(self) -> None:
        """Delete this session's messages (other sessions and long-term memory stay)."""
        self.engine.history_clear(self.user_id, self._chat_session)

    def __len__(self) -> int:
        return len(self.engine.history_read(self.user_id, self._chat_session))

    def search_messages(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        """Messages of this session matching ``query`` by keyword and meaning, best first.

        Waits for this engine's queued long-term writes first, so a message just added is
        found. Each result: ``content``, ``type`` (``human``/``ai``), ``message`` (the
        ``BaseMessage``), ``score``, ``score_parts``, ``created_at``, ``seq``.
        """
        limit = check.k(limit, self.engine.config.max_k)
        self.engine.flush()
        present = dict(self.engine.history_read(self.user_id, self._chat_session))
        hits = self.engine.search(
            self.user_id, query, k=min(self.engine.config.max_k, 4 * limit),
            session_id=self.session_id, kinds=[Kind.TURN],
        )
        return self._matches(hits, present, limit)

    # --- async ------------------------------------------------------------------------

    def _aengine(self) -> AsyncMemoryEngine:
        if self._async_engine is not None:
            return self._async_engine
        loop = asyncio.get_running_loop()
        with _engines_lock:
            per_loop = _async_engines.setdefault(loop, {})
            engine = per_loop.get(self.engine.config)
            if engine is None:
                engine = per_loop[self.engine.config] = AsyncMemoryEngine(
                    self.engine.config, embedder=self.engine.embedder)
        return engine

    async def aget_messages(self) -> list[BaseMessage]:
        """Every message of the session, oldest first."""
        stored = await self._aengine().history_read(self.user_id, self._chat_session)
        return self._decode(stored)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Store messages (and queue the turns for long-term memory)."""
        payloads = self._encode(messages)
        if not payloads:
            return
        first = await self._aengine().history_append(
            self.user_id, self._chat_session, payloads, ttl=self.ttl)
        self._remember(messages, first)

    async def aclear(self) -> None:
        """Delete this session's messages."""
        await self._aengine().history_clear(self.user_id, self._chat_session)

    # --- shared -----------------------------------------------------------------------

    @staticmethod
    def _encode(messages: Sequence[BaseMessage]) -> list[str]:
        if isinstance(messages, BaseMessage):
            raise InvalidArgumentError("add_messages takes a list of messages")
        out = []
        for i, message in enumerate(messages):
            if not isinstance(message, BaseMessage):
                raise InvalidArgumentError(
                    f"message {i} is a {type(message).__name__}, not a LangChain BaseMessage")
            text = json.dumps(message_to_dict(message), ensure_ascii=False)
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidArgumentError(
                    f"message {i} is not valid Unicode (it holds a lone surrogate)") from None
            out.append(text)
        return out

    @staticmethod
    def _decode(stored: Sequence[tuple[int, str]]) -> list[BaseMessage]:
        return messages_from_dict([json.loads(text) for _, text in stored])

    def _remember(self, messages: Sequence[BaseMessage], first_seq: int) -> None:
        """Queue the human and AI turns with text for long-term memory (no waiting)."""
        if not self.remember:
            return
        items = []
        for seq, message in enumerate(messages, start=first_seq):
            role = (Role.USER if isinstance(message, HumanMessage)
                    else Role.ASSISTANT if isinstance(message, AIMessage) else None)
            text = message_text(message).strip()
            if role is None or not text:
                continue
            items.append(NewMemory(
                text=text, session_id=self.session_id, kind=Kind.TURN, role=role,
                name=message.name or None,
                metadata={"chat_session": self._chat_session, "seq": seq,
                          "message_id": message.id},
            ))
        if items:
            self.engine.add_later(self.user_id, items)

    def _matches(
        self, hits: Sequence[Any], present: dict[int, str], limit: int
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for hit in hits:
            meta = hit.memory.metadata
            seq = meta.get("seq")
            if meta.get("chat_session") != self._chat_session or seq not in present:
                continue  # another namespace, or cleared / expired from the history
            (message,) = messages_from_dict([json.loads(present[seq])])
            parts = hit.parts
            out.append({
                "content": hit.memory.text, "type": message.type, "message": message,
                "score": hit.score, "created_at": hit.memory.created_at, "seq": seq,
                "score_parts": {"keyword": parts.keyword, "vector": parts.vector,
                                "decay": parts.decay},
            })
            if len(out) == limit:
                break
        return out
