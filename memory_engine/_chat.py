"""``memory-engine chat``: a terminal chat whose assistant remembers the user across sessions.

The chain is the library's own: ``with_long_term_memory(prompt | llm)``. Before each reply the
chat shows the memories of the user's earlier sessions that reached the prompt, taken from
the chain's own recall (a callback on its retriever), so what is shown is what the model saw.

Imported only by the ``chat`` subcommand: the other subcommands never load LangChain.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import SecretStr

from . import _validation as check
from .engine import MemoryEngine
from .exceptions import ConfigurationError
from .langchain import format_memories, with_long_term_memory
from .langchain._history import message_text

DEFAULT_MODEL = "gpt-4o-mini"
EXIT_COMMANDS = frozenset({"/exit", "/quit"})
NOTHING_RECALLED = "  recalled: nothing yet"
SHOWN_CHARS = 200  # a recalled line is cut after this many characters of its memory

SYSTEM_PROMPT = (
    "You are a helpful assistant with a long-term memory of this user.\n"
    "Facts about the user from earlier conversations, most relevant first:\n"
    "{memories}\n"
    "Use them when they help answer; do not invent others."
)


def no_llm_message(feature: str = "chat") -> str:
    """What to do when ``feature`` needs a chat model and none is configured."""
    return (
        f"{feature} needs an OpenAI-compatible chat model, and none is configured. Set one of:\n"
        "  export OPENAI_API_KEY=sk-...                      # the OpenAI API\n"
        "  export OPENAI_BASE_URL=http://127.0.0.1:8000/v1   # a local server: vLLM, Ollama, "
        "LiteLLM\n"
        "and pick the model with --model or MEMORY_ENGINE_CHAT_MODEL "
        f"(default {DEFAULT_MODEL})."
    )


NO_LLM_MESSAGE = no_llm_message()


def new_session_id(now: dt.datetime | None = None) -> str:
    """A fresh session id: ``chat-`` and the UTC time, e.g. ``chat-20240501T120000Z``."""
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(dt.UTC).strftime("chat-%Y%m%dT%H%M%SZ")


def chat_model(
    model: str | None = None, environ: Mapping[str, str] | None = None, *,
    feature: str = "chat",
) -> tuple[BaseChatModel, str]:
    """A ``ChatOpenAI`` configured from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``, and a
    label for it (``model gpt-4o-mini at http://...``).

    The model is ``model``, else ``MEMORY_ENGINE_CHAT_MODEL``, else ``gpt-4o-mini``. With only
    ``OPENAI_BASE_URL`` set, a placeholder key is sent (local servers ignore it).

    Raises:
        ConfigurationError: neither variable is set; the message (``no_llm_message(feature)``)
            says how to set one.
    """
    env = os.environ if environ is None else environ
    api_key, base_url = env.get("OPENAI_API_KEY"), env.get("OPENAI_BASE_URL")
    if not api_key and not base_url:
        raise ConfigurationError(no_llm_message(feature))
    from langchain_openai import ChatOpenAI  # only the chat needs it

    name = model or env.get("MEMORY_ENGINE_CHAT_MODEL") or DEFAULT_MODEL
    llm = ChatOpenAI(model=name, api_key=SecretStr(api_key or "not-needed"),
                     base_url=base_url or None)
    return llm, f"model {name} at {base_url or 'the OpenAI API'}"


def chat_chain(engine: MemoryEngine, llm: Runnable[Any, Any], *, k: int = 4) -> Runnable[Any, Any]:
    """``with_long_term_memory(prompt | llm)`` with the chat's prompt: the system message
    holds ``{memories}``, then the session's history, then the human ``{input}``."""
    prompt = ChatPromptTemplate.from_messages([
        ("system", SYSTEM_PROMPT),
        MessagesPlaceholder("history"),
        ("human", "{input}"),
    ])
    return with_long_term_memory(prompt | llm, engine=engine, k=k)


def earlier_memories(docs: Sequence[Document], session_id: str, k: int) -> list[Document]:
    """What the chain puts in ``{memories}`` from its retriever's documents: the first ``k``
    that are not of the current session."""
    return [d for d in docs if d.metadata.get("session_id") != session_id][:k]


def recalled_lines(docs: Sequence[Document]) -> list[str]:
    """One ``  recalled: (2024-05-01) user: text`` line per memory (``format_memories``
    without the bullet, on one line, cut after ``SHOWN_CHARS``), or
    ``  recalled: nothing yet``."""
    if not docs:
        return [NOTHING_RECALLED]
    lines = []
    for doc in docs:
        text = " ".join(format_memories([doc]).removeprefix("- ").split())
        if len(text) > SHOWN_CHARS:
            text = text[:SHOWN_CHARS - 1] + "\u2026"
        lines.append("  recalled: " + text)
    return lines


class RecallPrinter(BaseCallbackHandler):
    """Prints, once per turn, the memories the chain's recall found (before the reply)."""

    def __init__(self, session_id: str, k: int, out: IO[str]) -> None:
        self.session_id = session_id
        self.k = k
        self.out = out
        self._lock = threading.Lock()
        self._printed = False
        self.recalled: list[Document] = []

    def start_turn(self) -> None:
        with self._lock:
            self._printed = False
            self.recalled = []

    @property
    def printed(self) -> bool:
        return self._printed

    def on_retriever_end(
        self, documents: Sequence[Document], *, run_id: UUID,
        parent_run_id: UUID | None = None, **kwargs: Any,
    ) -> None:
        with self._lock:
            if self._printed:
                return
            self.recalled = earlier_memories(documents, self.session_id, self.k)
            self._show(self.recalled)

    def ensure_printed(self) -> None:
        """Show "nothing yet" when the chain recalled nothing at all this turn."""
        with self._lock:
            if not self._printed:
                self._show([])

    def _show(self, docs: Sequence[Document]) -> None:
        for line in recalled_lines(docs):
            print(line, file=self.out)
        self.out.flush()
        self._printed = True


def _lines(stdin: IO[str], stdout: IO[str]) -> Iterator[str]:
    """The user's lines, stripped, empty ones skipped; a ``you> `` prompt on a terminal."""
    interactive = stdin.isatty() and stdout.isatty()
    if interactive and stdin is sys.stdin:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 (line editing and history for input())
    while True:
        if interactive and stdin is sys.stdin:
            try:
                line = input("you> ")
            except EOFError:
                print(file=stdout)
                return
        else:
            if interactive:
                print("you> ", end="", file=stdout, flush=True)
            line = stdin.readline()
            if not line:
                return
        text = line.strip()
        if text:
            yield text


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def run_chat(
    engine: MemoryEngine,
    llm: Runnable[Any, Any],
    *,
    user_id: str,
    session_id: str,
    k: int = 4,
    model_label: str = "",
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Chat until EOF, ``/exit`` or ``/quit``; then write the session's long-term memories
    (``engine.flush()``), close the engine and say how many turns were remembered.

    Returns the exit code: 0, 1 when the chat model failed (one line on ``stderr``), 130 on
    Ctrl-C. Engine errors (Redis down, ...) propagate as ``MemoryEngineError``.
    """
    import openai  # only the chat needs it

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    user_id = check.user_id(user_id)
    session = check.session_id(session_id)
    if session is None:
        raise ConfigurationError("a chat needs a session id")
    chain = chat_chain(engine, llm, k=k)
    engine.connect()  # Redis down or a bad index fails here, before the first message
    printer = RecallPrinter(session, k, stdout)
    config: RunnableConfig = {
        "configurable": {"user_id": user_id, "session_id": session},
        "callbacks": [printer],
    }
    where = f" ({model_label})" if model_label else ""
    print(f"memory-engine chat: user {user_id!r}, session {session!r}{where}", file=stdout)
    print("Type a message; /exit, /quit or Ctrl-D ends the chat.", file=stdout, flush=True)

    turns, code = 0, 0
    try:
        for text in _lines(stdin, stdout):
            if text in EXIT_COMMANDS:
                break
            printer.start_turn()
            started = False
            try:
                for chunk in chain.stream({"input": text}, config=config):
                    piece = message_text(chunk) if isinstance(chunk, BaseMessage) else str(chunk)
                    if not started:
                        printer.ensure_printed()
                        print("assistant: ", end="", file=stdout)
                        started = True
                    print(piece, end="", file=stdout, flush=True)
            except openai.APIError as exc:
                if started:
                    print(file=stdout, flush=True)
                print(f"memory-engine: error: the chat model failed: {_one_line(exc)}",
                      file=stderr)
                code = 1
                break
            if not started:
                printer.ensure_printed()
                print("assistant: ", end="", file=stdout)
            print(file=stdout, flush=True)
            turns += 1
    except KeyboardInterrupt:
        print(file=stdout)
        code = 130
    engine.flush()  # the turns queued for long-term memory are written now
    engine.close()
    plural = "" if turns == 1 else "s"
    print(f"remembered {turns} turn{plural} of session {session!r} for user {user_id!r}",
          file=stdout, flush=True)
    return code
