"""Chat-history storage: keys, scripts and reply parsing. No I/O.

A session's messages are one string key each (so each can carry its own TTL, as
langchain-redis does), plus a sorted set of their sequence numbers (the order) and a
counter. Every key of a user shares the user's hash tag, and every operation is one Lua
script: one round trip, atomic, so a reader never sees half an append.

Keys, for user U and session S (both percent-encoded)::

    {prefix}:hist:{U}:S:idx      ZSET  seq -> seq
    {prefix}:hist:{U}:S:seq      STRING, the last sequence number issued
    {prefix}:hist:{U}:S:m:<seq>  STRING, the message (JSON, LangChain's message_to_dict)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._records import encode_tag

# KEYS: idx, seq. ARGV: ttl seconds (0 = none), message key base, then the messages.
# Returns the first sequence number written.
APPEND = """
local ttl = tonumber(ARGV[1])
local first = redis.call('INCRBY', KEYS[2], #ARGV - 2) - (#ARGV - 2) + 1
for i = 3, #ARGV do
  local seq = first + i - 3
  if ttl > 0 then
    redis.call('SET', ARGV[2] .. seq, ARGV[i], 'EX', ttl)
  else
    redis.call('SET', ARGV[2] .. seq, ARGV[i])
  end
  redis.call('ZADD', KEYS[1], seq, seq)
end
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return first
"""

# KEYS: idx. ARGV: message key base. Returns {seq, message, seq, message, ...} in order and
# drops the index entries of messages that have expired.
READ = """
local out = {}
for _, seq in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local value = redis.call('GET', ARGV[1] .. seq)
  if value then
    out[#out + 1] = seq
    out[#out + 1] = value
  else
    redis.call('ZREM', KEYS[1], seq)
  end
end
return out
"""

# KEYS: idx, seq. ARGV: message key base. Returns how many messages were deleted.
CLEAR = """
local n = 0
for _, seq in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  n = n + redis.call('DEL', ARGV[1] .. seq)
end
redis.call('DEL', KEYS[1], KEYS[2])
return n
"""


@dataclass(frozen=True, slots=True)
class HistoryKeys:
    """The keys of one user's session."""

    index: str
    counter: str
    message_base: str
    user_id: str = ""

    @classmethod
    def of(cls, prefix: str, user_id: str, session_id: str) -> HistoryKeys:
        base = f"{user_pattern_base(prefix, user_id)}{encode_tag(session_id)}:"
        return cls(index=f"{base}idx", counter=f"{base}seq", message_base=f"{base}m:",
                   user_id=user_id)

    def append_args(self, messages: Sequence[str], ttl: int | None) -> list[Any]:
        return ["EVAL", APPEND, 2, self.index, self.counter, ttl or 0, self.message_base,
                *messages]

    def read_args(self) -> list[Any]:
        return ["EVAL", READ, 1, self.index, self.message_base]

    def clear_args(self) -> list[Any]:
        return ["EVAL", CLEAR, 2, self.index, self.counter, self.message_base]


def user_pattern_base(prefix: str, user_id: str) -> str:
    """Where one user's history keys start (``forget_user`` scans ``<this>*``)."""
    return f"{prefix}:hist:{{{encode_tag(user_id)}}}:"


def stored_messages(reply: Sequence[Any]) -> list[tuple[int, str]]:
    """A READ reply as (sequence number, message JSON) pairs, oldest first."""
    out = []
    for i in range(0, len(reply), 2):
        seq, value = reply[i], reply[i + 1]
        out.append((int(seq), value.decode() if isinstance(value, bytes) else str(value)))
    return out
