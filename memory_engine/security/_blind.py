"""The blind keyword index: keyed digests of stemmed words, searchable without the words.

Text is tokenized the way RediSearch indexes it (lower-cased words, its default stopwords
dropped, Snowball English stems), and each token is replaced by HMAC-SHA256 under the user's
blind key, truncated to 12 bytes. A query's tokens are blinded the same way and matched as tags.

What the server learns: equal tokens of one user give equal digests, so it sees which of that
user's memories share a word and how often each digest occurs (frequency leakage), but not the
word. The same word gives different digests for different users. The blind key is derived from
the user's data key, so destroying the data key destroys the blind key too.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Iterable
from functools import lru_cache

import snowballstemmer

DIGEST_BYTES = 12

# RediSearch's default stopword list.
STOPWORDS: frozenset[str] = frozenset({
    "a", "is", "the", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in",
    "into", "it", "no", "not", "of", "on", "or", "such", "that", "their", "then", "there",
    "these", "they", "this", "to", "was", "will", "with",
})

_WORD = re.compile(r"\w+")
# A Snowball stemmer keeps its working state on the instance: one shared instance, one lock.
_STEMMER = snowballstemmer.stemmer("english")
_STEMMER_LOCK = threading.Lock()


@lru_cache(maxsize=65_536)
def _stem(word: str) -> str:
    with _STEMMER_LOCK:
        return str(_STEMMER.stemWord(word))


def keyword_tokens(text: str) -> list[str]:
    """The stems of the non-stopword words of ``text``, lower-cased, each once, in order.

    Safe to call from several threads.
    """
    tokens: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOPWORDS:
            tokens.setdefault(_stem(word), None)
    return list(tokens)


def blind_tokens(blind_key: bytes, tokens: Iterable[str]) -> list[str]:
    """Each token's HMAC-SHA256 under ``blind_key``, as 24 lowercase hex characters; each
    digest once, in the order of the tokens."""
    digests: dict[str, None] = {}
    for token in tokens:
        mac = hmac.new(blind_key, token.encode("utf-8"), hashlib.sha256).digest()
        digests.setdefault(mac[:DIGEST_BYTES].hex(), None)
    return list(digests)


def blind_text(blind_key: bytes, text: str) -> list[str]:
    """The blinded keyword tokens of ``text``: ``blind_tokens(blind_key, keyword_tokens(text))``."""
    return blind_tokens(blind_key, keyword_tokens(text))
