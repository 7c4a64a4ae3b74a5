"""The engine's I/O-free half: validation, record building and query planning.

``MemoryEngine`` and ``AsyncMemoryEngine`` are thin shells around ``EngineCore``: they embed
and talk to Redis; everything else happens here, once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _validation as check
from ._context import Turn, conversation_context, sessions_of, speaker_line
from .config import EngineConfig
from .embeddings import Embedder, normalized
from .exceptions import InvalidArgumentError, MemoryEngineError, StoreError
from .lifecycle.decay import DecayPolicy
from .models import Memory, NewMemory, SearchHit, SearchMode, Vector
from .retrieval._queries import (
    DECAY_FIELDS,
    DEDUPE_FIELDS,
    MAX_QUERY_TERMS,
    QUESTION_WORDS,
    RANK_FIELDS,
    SearchRequest,
    count_command,
    exact_vector_query,
    filter_text,
    keyword_command,
    vector_command,
)
from .retrieval._ranking import Candidate, Fusion, Ranked, RankingOptions, rank, with_overrides
from .retrieval._results import keyword_candidates, vector_candidates, with_recall_stats
from .retrieval._script import (
    as_text,
    is_final,
    read_reply,
    score_parts,
    script_args,
    unreadable,
)
from .security import load_key_chain
from .store import StoreCore, StoreSettings, new_id
from .store._crypto import Sealer
from .store._history import HistoryKeys
from .store._records import from_values

_NEW_FIELDS = {f.name for f in dataclasses.fields(NewMemory)}
_UPDATABLE = ("text", "session_id", "kind", "role", "name", "importance", "metadata")


@dataclass(frozen=True, slots=True)
class PreparedWrite:
    """Validated memories, what each is indexed with, and which still need a vector."""

    memories: list[Memory]
    vectors: list[Vector | None]
    to_embed: list[int]
    embed_texts: list[str]
    keyword_context: list[str | None]
    tails: dict[str, list[str]] = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        """What the embedder gets, for the memories without a caller-given vector."""
        return [self.embed_texts[i] for i in self.to_embed]

    @property
    def sessions(self) -> list[str]:
        """Sessions whose latest stored turns are needed as context."""
        return sessions_of(self.memories)


class EngineCore:
    """Everything the engine does that needs neither Redis nor the model."""

    def __init__(self, config: EngineConfig, embedder: Embedder):
        self.config = config
        self.embedder = embedder
        self._store_core: StoreCore | None = None
        self._ranking = self._ranking_options(config)  # config is frozen: built once
        chain = load_key_chain(config)  # a key provider is called here, once
        self.sealer = None if chain is None else Sealer(chain, config.key_prefix)

    @property
    def store_core(self) -> StoreCore:
        """The store core; built on first use because the vector size needs the model."""
        if self._store_core is None:
            cfg = self.config
            self._store_core = StoreCore(StoreSettings(
                index_name=cfg.index_name, key_prefix=cfg.key_prefix, dims=self.embedder.dims,
                embedder_name=self.embedder.name, hnsw_m=cfg.hnsw_m,
                hnsw_ef_construction=cfg.hnsw_ef_construction,
                hnsw_ef_runtime=cfg.hnsw_ef_runtime, write_batch_size=cfg.write_batch_size,
            ), self.sealer)
        return self._store_core

    def prepare_write(
        self, user_id: object, items: Iterable[NewMemory | Mapping[str, Any] | str], now: float
    ) -> PreparedWrite:
        """Validate every item before anything is embedded or written."""
        uid = check.user_id(user_id)
        if isinstance(items, str | bytes | NewMemory):
            raise InvalidArgumentError("add_many takes a list of items; use add for one memory")
        memories: list[Memory] = []
        vectors: list[Vector | None] = []
        to_embed: list[int] = []
        for position, raw in enumerate(items):
            item = self.as_new(raw, position)
            created = check.timestamp(item.created_at, "created_at")
            memories.append(Memory(
                id=new_id(now),
                user_id=uid,
                text=check.text(item.text, self.config.max_text_chars),
                kind=check.kind(item.kind),
                session_id=check.session_id(item.session_id),
                role=check.role(item.role),
                name=check.name(item.name),
                created_at=now if created is None else created,
                last_accessed=now if created is None else created,
                access_count=0,
                importance=check.importance(item.importance),
                metadata=check.metadata(item.metadata),
            ))
            if item.embedding is None:
                vectors.append(None)
                to_embed.append(position)
            else:
                vectors.append(normalized(item.embedding, self.embedder.dims))
        if not memories:
            raise InvalidArgumentError("add_many needs at least one item")
        return PreparedWrite(
            memories, vectors, to_embed,
            embed_texts=[speaker_line(m.name, m.text) for m in memories],
            keyword_context=[None] * len(memories),
        )

    def prepare_later(
        self, user_id: object, items: Iterable[NewMemory | Mapping[str, Any] | str]
    ) -> tuple[str, list[NewMemory]]:
        """Validate ``add_later`` items now (as ``add_many`` will) and return the user id and
        the items to queue."""
        items = list(items)
        prepared = self.prepare_write(user_id, items, 0.0)
        return prepared.memories[0].user_id, [self.as_new(item, i) for i, item in enumerate(items)]

    def with_context(
        self, prepared: PreparedWrite, tails: Mapping[str, Sequence[Turn]]
    ) -> PreparedWrite:
        """Link turns to the ones before them (``tails``: the sessions' stored latest turns)."""
        ctx = conversation_context(prepared.memories, tails, self.config.context_turns)
        return dataclasses.replace(
            prepared, memories=ctx.memories, embed_texts=ctx.embed_texts,
            keyword_context=ctx.keyword_context, tails=ctx.tails,
        )

    @staticmethod
    def as_new(raw: NewMemory | Mapping[str, Any] | str, position: int) -> NewMemory:
        """One ``add_many`` item as a ``NewMemory`` (unknown dict fields are an error)."""
        if isinstance(raw, NewMemory):
            return raw
        if isinstance(raw, str):
            return NewMemory(text=raw)
        if isinstance(raw, Mapping):
            unknown = set(raw) - _NEW_FIELDS
            if unknown:
                raise InvalidArgumentError(
                    f"item {position} has unknown fields {sorted(unknown)}; "
                    f"allowed: {sorted(_NEW_FIELDS)}"
                )
            if "text" not in raw:
                raise InvalidArgumentError(f"item {position} has no 'text'")
            return NewMemory(**raw)
        raise InvalidArgumentError(
            f"item {position} must be a NewMemory, a dict or a string; got {type(raw).__name__}"
        )

    def records(
        self, prepared: PreparedWrite, embedded: Sequence[Vector]
    ) -> list[tuple[Memory, Vector, str | None]]:
        """Pair each memory with its vector, given the vectors of ``prepared.to_embed``."""
        vectors = list(prepared.vectors)
        if prepared.to_embed:
            matrix = normalized(embedded, self.embedder.dims, rows=len(prepared.to_embed))
            for position, vector in zip(prepared.to_embed, matrix, strict=True):
                vectors[position] = vector
        return [
            (m, v, c)
            for m, v, c in zip(prepared.memories, vectors, prepared.keyword_context, strict=True)
            if v is not None
        ]

    def history_keys(self, user_id: object, session_id: object) -> HistoryKeys:
        """The keys of one user's chat session (both ids validated)."""
        session = check.session_id(session_id)
        if session is None:
            raise InvalidArgumentError("a chat history needs a session_id")
        return HistoryKeys.of(self.config.key_prefix, check.user_id(user_id), session)

    def history_write(
        self, user_id: object, session_id: object, messages: Sequence[object], ttl: object
    ) -> tuple[HistoryKeys, list[str], int | None]:
        """Validate a history append: keys, the message texts, the TTL in seconds."""
        keys = self.history_keys(user_id, session_id)
        if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
            raise InvalidArgumentError("messages must be a list of strings")
        texts = []
        for i, message in enumerate(messages):
            if not isinstance(message, str):
                raise InvalidArgumentError(
                    f"message {i} must be a string, not {type(message).__name__}")
            texts.append(message)
        if not texts:
            raise InvalidArgumentError("history_append needs at least one message")
        return keys, texts, check.ttl(ttl)

    def seal_history(self, keys: HistoryKeys, texts: list[str]) -> list[str]:
        """Chat messages as stored: encrypted, bound to their session, when encryption is on."""
        if self.sealer is None:
            return texts
        return [self.sealer.seal_text(keys.user_id, keys.index, "history", t) for t in texts]

    def open_history(
        self, keys: HistoryKeys, rows: list[tuple[int, str]]
    ) -> list[tuple[int, str]]:
        if self.sealer is None:
            return rows
        return [(seq, self.sealer.open_text(keys.user_id, keys.index, "history", text))
                for seq, text in rows]

    @staticmethod
    def update_embed_text(updated: Memory, before: Sequence[Memory]) -> str:
        """What a rewritten memory is embedded as: the turns before it (oldest first, as
        many as ``context_turns``), then itself, as ``add`` embeds it."""
        return "\n".join([*(speaker_line(m.name, m.text) for m in before),
                          speaker_line(updated.name, updated.text)])

    def prepare_update(self, existing: Memory, changes: Mapping[str, Any]) -> tuple[Memory, bool]:
        """The updated memory, and whether its text changed (so it must be re-embedded)."""
        unknown = set(changes) - set(_UPDATABLE)
        if unknown:
            raise InvalidArgumentError(
                f"cannot update {sorted(unknown)}; allowed: {list(_UPDATABLE)}"
            )
        values: dict[str, Any] = {}
        validators: dict[str, Any] = {
            "text": lambda v: check.text(v, self.config.max_text_chars),
            "session_id": check.session_id, "kind": check.kind, "role": check.role,
            "name": check.name, "importance": check.importance, "metadata": check.metadata,
        }
        for name, value in changes.items():
            values[name] = validators[name](value)
        if values.get("session_id", existing.session_id) != existing.session_id:
            values["previous_id"] = None  # it no longer follows anything in its new session
        updated = dataclasses.replace(existing, **values)
        return updated, (updated.text, updated.name) != (existing.text, existing.name)

    def ranking_options(self) -> RankingOptions:
        """The configured ranking defaults."""
        return self._ranking

    @staticmethod
    def _ranking_options(cfg: EngineConfig) -> RankingOptions:
        return RankingOptions(
            fusion=Fusion(cfg.fusion), rrf_k=cfg.rrf_k, keyword_weight=cfg.keyword_weight,
            vector_weight=cfg.vector_weight, context_credit=cfg.context_credit,
            decay_weight=cfg.decay_weight,
            decay=DecayPolicy(cfg.decay_strength_days, cfg.decay_reinforcement,
                              cfg.importance_weight),
        )

    def plan_search(
        self, user_id: object, query: object, *, k: object, mode: object, clock: float,
        session_id: object = None, kinds: Iterable[object] | None = None,
        since: object = None, until: object = None, now: object = None,
        min_score: object = None, min_similarity: object = None, dedupe: object = None,
        decay_weight: object = None, fusion: object = None,
    ) -> SearchPlan:
        """Validate a search and decide what to fetch. ``clock`` is the time when ``now`` is
        not given."""
        req = SearchRequest(
            user_id=check.user_id(user_id),
            query=check.text(query, self.config.max_text_chars, "query"),
            k=check.k(k, self.config.max_k),
            mode=check.mode(mode),
            session_id=check.session_id(session_id),
            kinds=check.kinds(kinds),
            since=check.timestamp(since, "since"),
            until=check.timestamp(until, "until"),
        )
        if req.since is not None and req.until is not None and req.since > req.until:
            raise InvalidArgumentError(f"since ({req.since}) is after until ({req.until})")
        options = with_overrides(
            self.ranking_options(),
            min_score=check.optional_number(min_score, "min_score"),
            min_similarity=check.optional_number(min_similarity, "min_similarity", -1.0, 1.0),
            dedupe=check.optional_bool(dedupe, "dedupe"),
            decay_weight=check.optional_number(decay_weight, "decay_weight", 0.0, 1.0),
            fusion=None if fusion is None else Fusion(check.fusion(fusion)),
        )
        reranked = (
            req.mode is SearchMode.HYBRID or options.decay_weight > 0 or options.dedupe
            or options.min_similarity is not None
        )
        candidates = max(req.k, self.config.hybrid_candidates) if reranked else req.k
        when = check.timestamp(now, "now")
        return SearchPlan(req, options, candidates, clock if when is None else when)

    @staticmethod
    def needs_vector(plan: SearchPlan) -> bool:
        return plan.request.mode is not SearchMode.KEYWORD

    @staticmethod
    def _candidate_fields(plan: SearchPlan, *, keyword: bool) -> tuple[str, ...]:
        """What a search command returns per candidate: what this plan's ranking reads.

        ``previous_id`` only serves context credit (hybrid, ``context_credit`` > 0), and a
        vector search leaves it out otherwise: the KNN's own distance costs nothing to
        return, while a stored field costs ~0.5 us a candidate from the index's sortable
        copy and ~1.6 us where RediSearch must open the hash (an index made before that copy
        existed, or the decay and de-duplication fields). A keyword search keeps it: with no
        field at all its reply takes another shape (``NOCONTENT``)."""
        credit = plan.request.mode is SearchMode.HYBRID and plan.options.context_credit > 0
        fields = RANK_FIELDS if credit or keyword else ()
        if plan.options.decay_weight > 0:
            fields += DECAY_FIELDS
        if plan.options.dedupe:
            fields += DEDUPE_FIELDS
        return fields

    def search_commands(self, plan: SearchPlan, vector: Vector | None) -> list[list[object]]:
        """The FT.SEARCH commands of a search: keyword first, then vector (if any). The
        search script runs them inside Redis (see ``search_args``)."""
        name = self.store_core.index_name
        req, n = plan.request, plan.candidates
        commands = []
        if req.mode is not SearchMode.VECTOR:
            blind = None
            if self.sealer is not None:
                blind = self.sealer.query_digests(req.user_id, req.query, QUESTION_WORDS)
                blind = blind[:MAX_QUERY_TERMS]
            keyword = keyword_command(
                name, req, n, self._candidate_fields(plan, keyword=True), blind=blind)
            if keyword is not None:
                commands.append(keyword)
        if req.mode is not SearchMode.KEYWORD:
            assert vector is not None
            commands.append(vector_command(
                name, req, vector, ef_runtime=self.config.hnsw_ef_runtime, n=n,
                fields=self._candidate_fields(plan, keyword=False),
            ))
        return commands

    def sent_commands(
        self, plan: SearchPlan, vector: Vector | None, matches: int
    ) -> list[list[object]]:
        """The FT.SEARCH commands the search script sends for this plan when its filter
        matches ``matches`` memories: the keyword search, then, for a vector search, the
        count and the vector search (exact when ``matches`` is at most
        ``exact_search_limit``). What a benchmark replays as the raw floor."""
        commands = self.search_commands(plan, vector)
        if plan.request.mode is SearchMode.KEYWORD or not commands:
            return commands
        limit = self.config.exact_search_limit
        vector_cmd = list(commands.pop())
        if limit > 0:
            commands.append(count_command(self.store_core.index_name, plan.request))
            if matches <= limit:
                vector_cmd[2] = exact_vector_query(plan.request, plan.candidates)
        return [*commands, vector_cmd]

    def search_args(self, plan: SearchPlan, vector: Vector | None) -> list[object] | None:
        """The search script's arguments (after its hash) for this plan, or None when there
        is nothing to search for (a keyword search with no searchable word)."""
        commands = self.search_commands(plan, vector)
        if not commands:
            return None
        req = plan.request
        vector_cmd = commands.pop() if req.mode is not SearchMode.KEYWORD else None
        keys = self.store_core.keys
        return script_args(
            owner_prefix=keys.memory(req.user_id, ""), recall_key=keys.recalls(req.user_id),
            mode=req.mode, options=plan.options, k=req.k,
            keyword=commands[0] if commands else None, vector=vector_cmd,
            exact_limit=self.config.exact_search_limit,
            search_filter=filter_text(req),
            exact_query=exact_vector_query(req, plan.candidates),
        )

    def read_search(
        self, plan: SearchPlan, reply: Sequence[Any]
    ) -> tuple[list[Ranked], dict[str, Memory | None]]:
        """The final ranking from the search script's reply, and the memories it read (by
        id; None for one deleted meanwhile). Hits missing from the second are read next."""
        got = read_reply(reply)
        ranked = got.ranked
        if got.keyword is not None or got.vector is not None:  # ranked here, not by the script
            owner = self.store_core.keys.memory(plan.request.user_id, "")
            keyword = keyword_candidates(got.keyword, owner) if got.keyword else []
            vector = vector_candidates(got.vector, owner) if got.vector else []
            ranked = self.ranked(plan, keyword, vector, got.recalls)
        rows = got.rows  # only the hits are built (a prefetch may hold more)
        sealer = self.sealer
        loaded = {r.id: from_values(r.id, *rows[r.id], sealer) for r in ranked if r.id in rows}
        return ranked, loaded

    @staticmethod
    def missing(ranked: Sequence[Ranked], loaded: Mapping[str, Memory | None]) -> list[str]:
        """Ids of final hits the search script did not read (its guess missed them)."""
        return [r.id for r in ranked if r.id not in loaded]

    def ranked(
        self, plan: SearchPlan, keyword: list[Candidate], vector: list[Candidate],
        recall_stats: Mapping[str, Any] | None = None,
    ) -> list[Ranked]:
        """The final ranking of the candidates, with recall counts (memory id -> side-hash
        entry) folded in first when given."""
        if self.sealer is not None and plan.options.dedupe:  # de-duplication reads the text
            keyword = self._opened(plan.request.user_id, keyword)
            vector = self._opened(plan.request.user_id, vector)
        if recall_stats:
            keyword = with_recall_stats(keyword, dict(recall_stats))
            vector = with_recall_stats(vector, dict(recall_stats))
        req = plan.request
        return rank(req.mode, req.k, keyword=keyword, vector=vector, options=plan.options,
                    now=plan.now)

    def _opened(self, user_id: str, candidates: list[Candidate]) -> list[Candidate]:
        assert self.sealer is not None
        return [c._replace(text=self.sealer.open(user_id, c.id, "text", c.text))
                for c in candidates]

    @staticmethod
    def hits(
        plan: SearchPlan, ranked: Sequence[Ranked], memories: Mapping[str, Memory | None]
    ) -> list[SearchHit]:
        """Pair the ranking with the memories read in full (by id). A memory deleted since
        the search ran (None) is left out, never returned half-read."""
        user_id = plan.request.user_id
        hits = []
        for r in ranked:
            memory = memories[r.id]
            if memory is not None:
                hits.append(_owned(SearchHit(memory, r.score, r.parts), user_id))
        return hits

    def final_hits(self, plan: SearchPlan, reply: Sequence[Any]) -> list[SearchHit] | None:
        """The hits, when the search script ranked them itself (the default ranking) and so
        read every one in full: the common case, built in one pass over the reply. None when
        it left the ranking to Python; then :meth:`read_search`, :meth:`missing` and
        :meth:`hits` do."""
        if not is_final(reply):
            return None
        user_id, sealer = plan.request.user_id, self.sealer
        hits = []
        try:
            for memory_id, score, kw, distance, row, stat in zip(*reply, strict=True):
                memory = from_values(as_text(memory_id), row, stat, sealer)
                if memory is not None:  # else deleted since the search ran: left out
                    hit = SearchHit(memory, float(score), score_parts(kw, distance))
                    hits.append(_owned(hit, user_id))
        except MemoryEngineError:  # unreadable memory, isolation, decryption: as they are
            raise
        except (TypeError, ValueError) as exc:  # the reply itself is not the script's
            raise unreadable(exc) from exc
        return hits


def _owned(hit: SearchHit, user_id: str) -> SearchHit:
    """``hit``, after checking it is ``user_id``'s: fail closed, never another user's."""
    if hit.memory.user_id != user_id:
        raise StoreError(f"isolation check failed: memory {hit.memory.id} is not {user_id!r}'s")
    return hit


@dataclass(frozen=True, slots=True)
class SearchPlan:
    """A validated search: the request, how to rank, how many candidates, and when."""

    request: SearchRequest
    options: RankingOptions
    candidates: int
    now: float


__all__ = ["EngineCore", "PreparedWrite", "SearchPlan"]
