"""The ``memory-engine`` command line.

Settings come from ``MEMORY_ENGINE_*`` environment variables (see ``EngineConfig.from_env``);
``--index`` and ``--redis-url`` override them for one command.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, _maintain_cli
from ._demo import run_demo
from .config import EngineConfig
from .engine import MemoryEngine
from .exceptions import InvalidArgumentError, MemoryEngineError
from .models import Kind, Role, SearchHit, SearchMode
from .security import MasterKey, generate_master_key, load_key_chain
from .server import EmbeddedServer
from .store import SCHEMA_VERSION

# Demo data is disposable: a new schema gets a fresh demo index instead of a mismatch error.
DEMO_INDEX = f"memory_engine_demo_v{SCHEMA_VERSION}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memory-engine",
        description="Long-term, per-user memory for LLM applications on Redis vector search.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--index", help="index name and key prefix (env MEMORY_ENGINE_INDEX)")
    parser.add_argument("--redis-url", help="a Redis with search (env MEMORY_ENGINE_REDIS_URL); "
                        "default: the embedded server")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="store a bundled conversation for two users and recall it")
    demo.add_argument("--k", type=int, default=3, help="hits shown per query (default 3)")

    server = sub.add_parser("server", help="manage the embedded Redis server")
    server.add_argument("action", choices=["start", "stop", "status"])

    add = sub.add_parser("add", help="remember one text; prints the new memory id")
    add.add_argument("--user", required=True, help="whose memory this is")
    add.add_argument("--session", help="the conversation it came from (optional)")
    add.add_argument("--role", choices=[r.value for r in Role], help="who said it (optional)")
    add.add_argument("--kind", choices=[k.value for k in Kind], default=Kind.TURN.value,
                     help="default: turn")
    add.add_argument("--importance", type=float, default=0.5,
                     help="0 to 1: how much it matters as it ages (default 0.5)")
    add.add_argument("text", help="what to remember")

    search = sub.add_parser("search", help="recall a user's memories relevant to a query")
    search.add_argument("--user", required=True, help="whose memories to search (only theirs)")
    search.add_argument("--k", type=int, default=10, help="hits to return, 1 to 1000 (default 10)")
    search.add_argument("--mode", choices=[m.value for m in SearchMode], default="hybrid",
                        help="default: hybrid (keyword and vector, fused)")
    search.add_argument("--session", help="only this conversation's memories")
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    search.add_argument("query", help="what to recall")

    forget = sub.add_parser("forget", help="delete one memory (--id) or all of a user's memories")
    forget.add_argument("--user", required=True, help="whose memory to delete")
    forget.add_argument("--id", dest="memory_id",
                        help="one memory (default: every memory of the user)")

    chat = sub.add_parser(
        "chat", help="chat in the terminal with an LLM that remembers the user across sessions",
        description="An interactive chat: each reply sees the user's relevant memories from "
                    "earlier sessions. Needs OPENAI_API_KEY, or OPENAI_BASE_URL for a local "
                    "OpenAI-compatible server (vLLM, Ollama, LiteLLM). Ends at EOF, /exit or "
                    "/quit.")
    chat.add_argument("--user", required=True)
    chat.add_argument("--session", help="default: a new one, chat-<UTC time>")
    chat.add_argument("--k", type=int, default=4,
                      help="memories of earlier sessions given per reply (default 4)")
    chat.add_argument("--model", help="default: env MEMORY_ENGINE_CHAT_MODEL, else gpt-4o-mini")
    _maintain_cli.add_parsers(sub)

    sub.add_parser("keygen", help="print a new master key (32 random bytes, URL-safe base64) "
                   "for MEMORY_ENGINE_MASTER_KEY")
    rotate = sub.add_parser(
        "rotate-key", help="re-wrap every user's data key under a new master key",
        description="Re-wraps every data key under the new master key (read from "
                    "--new-key-file, or MEMORY_ENGINE_NEW_MASTER_KEY); the current key comes "
                    "from the usual settings. Nothing is re-encrypted or re-embedded. Then "
                    "configure the new key, keeping the old one in "
                    "MEMORY_ENGINE_PREVIOUS_MASTER_KEYS until every process uses the new one.")
    rotate.add_argument("--new-key-file", help="a file (mode 0600) holding the new key")

    backup = sub.add_parser(
        "backup", help="snapshot one user or every user to a directory or s3://bucket/prefix")
    backup.add_argument("--to", required=True, help="a directory or s3://bucket/prefix")
    backup.add_argument("--user", help="only this user (default: every user)")
    backup.add_argument("--quiet", action="store_true", help="no progress bar")

    restore = sub.add_parser(
        "restore", help="put back one user or every user from a snapshot (default: the newest)")
    restore.add_argument("--from", dest="source", required=True,
                         help="a directory or s3://bucket/prefix")
    restore.add_argument("--user", help="only this user (default: every user in the snapshot)")
    restore.add_argument("--snapshot", help="a snapshot id (default: the newest)")
    restore.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _config(args: argparse.Namespace, **overrides: Any) -> EngineConfig:
    if args.index:
        overrides.update(index_name=args.index, key_prefix=args.index)
    if args.redis_url:
        overrides["redis_url"] = args.redis_url
    return EngineConfig.from_env(**overrides)


def _hit_json(hit: SearchHit) -> dict[str, Any]:
    m = hit.memory
    return {
        "id": m.id, "score": hit.score,
        "parts": {"keyword": hit.parts.keyword, "vector": hit.parts.vector,
                  "decay": hit.parts.decay},
        "text": m.text, "session_id": m.session_id, "kind": m.kind.value,
        "role": m.role.value if m.role else None, "name": m.name,
        "created_at": m.created_at, "metadata": m.metadata,
    }


def _server(args: argparse.Namespace) -> int:
    cfg = _config(args)
    server = EmbeddedServer(cfg.home, binary=cfg.redis_server, module=cfg.search_module)
    if args.action == "start":
        state = server.start(persistent=True)
        print(f"running: pid {state.pid}, 127.0.0.1:{state.port}, data in {server.data_dir}")
        return 0
    if args.action == "stop":
        print("stopped" if server.stop() else "not running")
        return 0
    current = server.status()
    if current is None:
        print(f"not running (home {cfg.home})")
        return 1
    kept = "until `memory-engine server stop`" if current.persistent else "while engines use it"
    uptime = time.time() - current.started_at
    print(f"running: pid {current.pid}, 127.0.0.1:{current.port}, up {uptime:.0f}s, "
          f"kept {kept}; data in {server.data_dir}")
    return 0


def _chat(args: argparse.Namespace) -> int:
    from . import _chat  # LangChain and the OpenAI client load for this subcommand only

    llm, label = _chat.chat_model(args.model)  # no LLM configured: an error before any input
    session = args.session if args.session is not None else _chat.new_session_id()
    with MemoryEngine(_config(args)) as engine:
        return _chat.run_chat(engine, llm, user_id=args.user, session_id=session, k=args.k,
                              model_label=label)


def _keys_and_backups(args: argparse.Namespace) -> int:
    if args.command == "keygen":
        print(generate_master_key())
        return 0
    if args.command == "rotate-key":
        if args.new_key_file:
            new = _read_key_file(args.new_key_file)
        elif os.environ.get("MEMORY_ENGINE_NEW_MASTER_KEY"):
            new = os.environ["MEMORY_ENGINE_NEW_MASTER_KEY"]
        else:
            raise InvalidArgumentError(
                "give the new key with --new-key-file or MEMORY_ENGINE_NEW_MASTER_KEY "
                "(never on the command line, where other users can read it)")
        with MemoryEngine(_config(args)) as engine:
            count = engine.rotate_master_key(new)
        print(f"re-wrapped {count} data keys under master key {MasterKey.parse(new).key_id}")
        return 0
    with MemoryEngine(_config(args)) as engine:
        if args.command == "backup":
            report = engine.backup(args.to, user_id=args.user, progress=not args.quiet)
            print(f"snapshot {report.snapshot_id}: {_count(len(report.users), 'user')}, "
                  f"{_count(report.memories, 'memory')}, {report.size} bytes to "
                  f"{report.destination} in {report.seconds:.1f}s")
            return 0
        got = engine.restore(args.source, user_id=args.user, snapshot=args.snapshot,
                             progress=not args.quiet)
        print(f"restored snapshot {got.snapshot_id}: {_count(len(got.restored), 'user')}, "
              f"{_count(got.memories, 'memory')} from {got.source}")
        for user, why in got.unreadable.items():
            print(f"not restored: {user!r}: {why}", file=sys.stderr)
        return 1 if got.unreadable else 0


def _read_key_file(path: str) -> str:
    chain = load_key_chain(EngineConfig(master_key_file=Path(path)))
    assert chain is not None
    return base64.urlsafe_b64encode(chain.current.key).decode("ascii")


def _count(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless ``n`` is 1: "1 user", "2 memories"."""
    if n == 1:
        return f"1 {noun}"
    return f"{n} {noun[:-1]}ies" if noun.endswith("y") else f"{n} {noun}s"


def _run(args: argparse.Namespace) -> int:
    if args.command in ("keygen", "rotate-key", "backup", "restore"):
        return _keys_and_backups(args)
    if args.command == "server":
        return _server(args)
    if args.command == "chat":
        return _chat(args)
    if args.command in _maintain_cli.COMMANDS:
        return _maintain_cli.run(args, _config(args))
    if args.command == "demo":
        cfg = _config(args) if args.index else _config(
            args, index_name=DEMO_INDEX, key_prefix=DEMO_INDEX
        )
        with MemoryEngine(cfg) as engine:
            run_demo(engine, sys.stdout, k=args.k)
        print(f"\nThe demo memories stay in index {cfg.index_name!r}; try:\n"
              f"  memory-engine --index {cfg.index_name} search --user maya \"peanuts\"")
        return 0
    with MemoryEngine(_config(args)) as engine:
        if args.command == "add":
            memory = engine.add(args.user, args.text, session_id=args.session, role=args.role,
                                kind=args.kind, importance=args.importance)
            print(memory.id)
        elif args.command == "search":
            # Connecting loads the model and the query encoder (seconds in a fresh process);
            # timed apart, so the latency printed is the search's own.
            t = time.perf_counter()
            engine.connect()
            load_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            hits = engine.search(args.user, args.query, k=args.k, mode=args.mode,
                                 session_id=args.session)
            ms = (time.perf_counter() - t) * 1000
            if args.json:
                print(json.dumps({"latency_ms": ms, "connect_ms": load_ms,
                                  "hits": [_hit_json(h) for h in hits]},
                                 ensure_ascii=False, indent=2))
            else:
                for hit in hits:
                    print(f"{hit.score:8.3f}  {hit.memory.id}  {hit.memory.text}")
                print(f"{_count(len(hits), 'hit')} in {ms:.1f} ms "
                      f"(connecting and loading the model: {load_ms:.0f} ms)", file=sys.stderr)
        elif args.command == "forget":
            if args.memory_id:
                engine.delete(args.user, args.memory_id)
                print(f"deleted {args.memory_id}")
            else:
                print(f"deleted {_count(engine.forget_user(args.user), 'memory')} of {args.user!r}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``memory-engine`` console script."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except MemoryEngineError as exc:
        print(f"memory-engine: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
