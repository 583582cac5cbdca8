"""The bytes each token of a tokenizer writes: what the grammar's automaton walks over.

Why bytes, not strings: Molmo2's tokenizers (Qwen2's for 4B and 8B, OLMo's for O-7B) are
byte-level BPE, where one token may hold half of a UTF-8 character ("é" is two tokens) and a token
may run across the grammar's pieces (``">`` or `` 308`` with its space). Walking bytes, every
way the model can spell a valid answer is allowed, and only those. Added tokens (ChatML markers,
image and video tokens) are never part of an answer: only the end-of-answer tokens are kept,
and the processor allows them where the answer is complete.
"""

from __future__ import annotations

import json
import re
import weakref
from dataclasses import dataclass
from typing import Any

from transformers.convert_slow_tokenizer import bytes_to_unicode

# Byte-level BPE writes byte b as the character bytes_to_unicode()[b]: map it back to chr(b), then latin-1.
_TO_LATIN1 = str.maketrans({c: chr(b) for b, c in bytes_to_unicode().items()})
_BYTE_LEVEL_CHARS = frozenset(bytes_to_unicode().values())
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@dataclass(frozen=True, eq=False)
class TokenBytes:
    """``tokens``: bytes of each answer token by id (None for added tokens); ``eos``: the ids that end an answer."""

    tokens: tuple[bytes | None, ...]
    eos: tuple[int, ...]

    def ids_by_bytes(self) -> dict[bytes, list[int]]:
        """Token ids by the bytes they write (several ids may write the same bytes)."""
        found: dict[bytes, list[int]] = {}
        for i, b in enumerate(self.tokens):
            if b:
                found.setdefault(b, []).append(i)
        return found


def _decoder_types(tokenizer: Any) -> set[str]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return set()
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    found, todo = set(), [decoder]
    while todo:
        d = todo.pop()
        found.add(d.get("type"))
        todo += d.get("decoders", [])
    return found


def _token_bytes(token: str, byte_level: bool) -> bytes | None:
    if byte_level:
        if not _BYTE_LEVEL_CHARS.issuperset(token):  # not a byte-level token: never in an answer
            return None
        return token.translate(_TO_LATIN1).encode("latin-1")
    fallback = _BYTE_FALLBACK.fullmatch(token)
    if fallback:
        return bytes([int(fallback.group(1), 16)])
    return token.replace("\u2581", " ").encode("utf-8")  # SentencePiece writes a space as "▁"


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_bytes(tokenizer: Any, eos_ids: tuple[int, ...]) -> TokenBytes:
    """The bytes of every token of ``tokenizer`` (a transformers tokenizer), read once per tokenizer."""
    key = (len(tokenizer), tuple(eos_ids))
    cached = _CACHE.get(tokenizer)
    if cached is not None and cached[0] == key:
        return cached[1]
    byte_level = "ByteLevel" in _decoder_types(tokenizer)
    added = set(getattr(tokenizer, "added_tokens_decoder", {}) or {}) | set(tokenizer.all_special_ids)
    tokens: list[bytes | None] = [None] * len(tokenizer)
    for token, i in tokenizer.get_vocab().items():
        if i not in added and 0 <= i < len(tokens):
            tokens[i] = _token_bytes(token, byte_level)
    found = TokenBytes(tuple(tokens), tuple(eos_ids))
    _CACHE[tokenizer] = (key, found)
    return found
