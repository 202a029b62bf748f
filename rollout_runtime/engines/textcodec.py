"""Token ids <-> text for the engines: a real tokenizer, or a synthetic vocabulary.

The protocol server needs text for ``text`` prompts, stop strings and responses. With a tokenizer
path, we use the model's own tokenizer (``transformers.AutoTokenizer``, decoding through the fast
``tokenizers`` backend directly because the Python wrapper costs ~10x more per call). Without one,
the simulated engine uses :class:`SyntheticCodec`, where every id maps to a fixed short string, so
text and ids always agree and no files are needed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol


class TextCodec(Protocol):
    """What the engines need from a tokenizer."""

    name_or_path: str
    vocab_size: int
    eos_token_ids: frozenset[int]
    special_ids: frozenset[int]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]: ...

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...

    def token_text(self, token_id: int) -> str: ...


class HFCodec:
    """A ``transformers`` tokenizer (loaded from a local path; nothing is downloaded)."""

    def __init__(self, path: str, tokenizer: Any | None = None) -> None:
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer = tokenizer
        self.name_or_path = path
        self._fast = getattr(tokenizer, "backend_tokenizer", None)
        self.vocab_size = len(tokenizer)
        eos: set[int] = set()
        if tokenizer.eos_token_id is not None:
            eos.add(int(tokenizer.eos_token_id))
        self.eos_token_ids = frozenset(eos)
        self.special_ids = frozenset(int(i) for i in tokenizer.all_special_ids)
        self._token_text = lru_cache(maxsize=65536)(self._token_text_uncached)

    def add_eos_ids(self, ids: list[int] | set[int]) -> None:
        """Extra EOS ids (e.g. from the model's generation_config)."""
        self.eos_token_ids = self.eos_token_ids | frozenset(int(i) for i in ids)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``; ``add_special_tokens=True`` is how SGLang tokenizes a ``text``
        prompt (a BOS for tokenizers that add one), False for response fragments."""
        if self._fast is not None:
            return self._fast.encode(text, add_special_tokens=add_special_tokens).ids
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        if self._fast is not None:
            return self._fast.decode(ids, skip_special_tokens=skip_special_tokens)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_text(self, token_id: int) -> str:
        return self._token_text(token_id)

    def _token_text_uncached(self, token_id: int) -> str:
        return self.decode([token_id], skip_special_tokens=False)


_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "so", "ta", "vi", "an", "er", "in", "on", "ul", "be", "do", "fu")


class SyntheticCodec:
    """A made-up vocabulary: ids 0-2 are ``<pad>``, ``<s>``, ``</s>`` (EOS); ids 3..258 are the 256
    byte values as characters (so any Latin-1 text can be encoded, one id per character); every
    higher id is a pseudo-word like ``" kalomi"`` (what the simulator samples as filler)."""

    PAD, BOS, EOS = 0, 1, 2
    CHAR_BASE = 3
    WORD_BASE = 3 + 256

    def __init__(self, vocab_size: int = 32000, eos_token_id: int = 2) -> None:
        if vocab_size <= self.WORD_BASE:
            raise ValueError(f"synthetic vocab_size must be > {self.WORD_BASE}")
        self.name_or_path = "synthetic"
        self.vocab_size = vocab_size
        self.eos_token_ids = frozenset({eos_token_id})
        self.special_ids = frozenset({self.PAD, self.BOS, self.EOS, eos_token_id})
        self._special_text = {self.PAD: "<pad>", self.BOS: "<s>", self.EOS: "</s>"}
        if eos_token_id not in self._special_text:
            self._special_text[eos_token_id] = "<eos>"
        self._cache: dict[int, str] = {}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        base = self.CHAR_BASE
        return [base + (o if o < 256 else 63) for o in map(ord, text)]  # 63 = "?"

    def token_text(self, token_id: int) -> str:
        s = self._cache.get(token_id)
        if s is None:
            if token_id in self._special_text:
                s = self._special_text[token_id]
            elif self.CHAR_BASE <= token_id < self.WORD_BASE:
                s = chr(token_id - self.CHAR_BASE)
            else:
                k = token_id - self.WORD_BASE
                n = len(_SYLLABLES)
                s = " " + _SYLLABLES[k % n] + _SYLLABLES[(k // n) % n] + _SYLLABLES[(k // (n * n)) % n]
            self._cache[token_id] = s
        return s

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        tt = self.token_text
        if skip_special_tokens:
            sp = self.special_ids
            return "".join([tt(i) for i in ids if i not in sp])
        return "".join([tt(i) for i in ids])

    def filler_ids(self) -> list[int]:
        """Ids the simulator samples response filler from (pseudo-words)."""
        return list(range(self.WORD_BASE, min(self.vocab_size, self.WORD_BASE + 4096)))
