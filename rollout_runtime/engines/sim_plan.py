"""What the simulated engine says: reproducible random responses with controllable answers.

See :mod:`rollout_runtime.engines.sim` for the behaviour (randomness, lengths, answers, text).
"""

from __future__ import annotations

import collections
import hashlib
import math
import random
import re

from .answers import arithmetic_answer, regex_answer
from .backend import RequestState
from .sim_config import SimEngineConfig
from .textcodec import HFCodec, SyntheticCodec, TextCodec

_FILLER_RE = re.compile(r"^[ A-Za-z.,']+$")


class ResponsePlanner:
    """The token sequence (and logprobs) a simulated request produces, decided when it starts."""

    def __init__(self, config: SimEngineConfig) -> None:
        self.config = config
        codec: TextCodec
        if config.tokenizer:
            hf = HFCodec(config.tokenizer)
            codec = hf
            filler = [
                i
                for i in range(hf.vocab_size)
                if i not in hf.special_ids and _FILLER_RE.match(hf.token_text(i) or "") is not None
            ]
            self.eos_id = min(hf.eos_token_ids) if hf.eos_token_ids else 0
        else:
            syn = SyntheticCodec(config.vocab_size, config.eos_token_id)
            codec = syn
            filler = syn.filler_ids()
            self.eos_id = config.eos_token_id
        self.codec = codec
        self.filler_ids = filler or [i for i in range(codec.vocab_size) if i not in codec.special_ids]
        self._answer_rx = re.compile(config.answer_regex) if config.answer_regex else None
        self._seen: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._answer_cache: collections.OrderedDict[int, tuple[str | None, float]] = collections.OrderedDict()
        pool_rng = random.Random(config.seed)
        self._lp_pool = [-pool_rng.expovariate(1.0 / config.logprob_mean) for _ in range(8191)]
        self._lp_pool_greedy = [-pool_rng.expovariate(8.0) for _ in range(8191)]

    def _request_rng(self, state: RequestState) -> random.Random:
        p = state.params
        # Only ints and floats are hashed: their hashes, unlike str's, do not change between processes.
        key = hash((tuple(state.input_ids), p.temperature, p.top_p, p.top_k, p.max_new_tokens))
        if p.sampling_seed is not None:
            return random.Random(hash((self.config.seed, key, p.sampling_seed, 1)))
        if p.greedy:
            return random.Random(hash((self.config.seed, key, 2)))
        count = self._seen.get(key, 0)
        self._seen[key] = count + 1
        self._seen.move_to_end(key)
        if len(self._seen) > 200_000:
            self._seen.popitem(last=False)
        return random.Random(hash((self.config.seed, key, count)))

    def _sample_length(self, rng: random.Random) -> int:
        c = self.config
        if c.length_dist == "fixed":
            n = c.length_median
        elif c.length_dist == "uniform":
            n = rng.randint(c.length_min, c.length_max)
        else:
            n = round(c.length_median * math.exp(rng.gauss(0.0, c.length_sigma)))
        return max(c.length_min, min(c.length_max, n))

    def _answer_for(self, state: RequestState) -> tuple[str | None, float]:
        """(right answer or None, this prompt's probability of answering right)."""
        c = self.config
        if c.answer_mode == "none":
            return None, 0.0
        key = hash(tuple(state.input_ids))
        cached = self._answer_cache.get(key)
        if cached is not None:
            return cached
        text = state.item.text if state.item.text is not None else self.codec.decode(state.input_ids, True)
        answer: str | None = None
        if c.answer_mode in ("auto", "regex") and self._answer_rx is not None:
            answer = regex_answer(text, self._answer_rx)
        if answer is None and c.answer_mode in ("auto", "arithmetic"):
            answer = arithmetic_answer(text)
        prob = 0.0
        if answer is not None:
            # Per-prompt difficulty: seeded by the prompt text, so every sample of a group shares it.
            h = int.from_bytes(hashlib.blake2b(f"{c.seed}:{answer}:{text[-256:]}".encode(), digest_size=8).digest(), "big")
            prng = random.Random(h)
            acc, conc = c.answer_accuracy, c.answer_concentration
            if acc <= 0.0 or acc >= 1.0:
                prob = acc
            else:
                prob = prng.betavariate(acc * conc, (1.0 - acc) * conc)
        self._answer_cache[key] = (answer, prob)
        if len(self._answer_cache) > 100_000:
            self._answer_cache.popitem(last=False)
        return answer, prob

    @staticmethod
    def _wrong_answer(answer: str, rng: random.Random) -> str:
        try:
            value = int(answer)
        except ValueError:
            return answer[::-1] + "x" if answer else "0"
        offset = rng.choice([-10, -2, -1, 1, 2, 10, 11, -11])
        return str(value + offset)

    def plan(self, state: RequestState) -> tuple[list[int], list[float]]:
        """The full token sequence (and logprobs) this request would produce without limits."""
        p = state.params
        rng = self._request_rng(state)
        length = max(self._sample_length(rng), p.min_new_tokens + 1)
        tail: list[int] = []
        answer, prob = self._answer_for(state)
        if answer is not None:
            shown = answer if (p.greedy and prob >= 0.5) or (not p.greedy and rng.random() < prob) else None
            if shown is None:
                shown = self._wrong_answer(answer, rng)
            tail = self.codec.encode(self.config.answer_template.format(answer=shown))
        if p.ignore_eos:
            total = p.max_new_tokens
            n_filler = max(0, total - len(tail))
            ids = rng.choices(self.filler_ids, k=n_filler) + tail
            ids = ids[:total]
        else:
            n_filler = max(0, length - 1 - len(tail))
            ids = rng.choices(self.filler_ids, k=n_filler) + tail + [self.eos_id]
            if len(ids) > p.max_new_tokens:
                ids = ids[: p.max_new_tokens]
        return ids, self._logprobs(rng, len(ids), p.greedy, state.item.return_logprob)

    def _logprobs(self, rng: random.Random, n: int, greedy: bool, wanted: bool) -> list[float]:
        """Plausible sampled-token logprobs: a random window of a precomputed exponential pool
        (drawing n fresh samples per request would dominate the zero-latency per-request cost)."""
        if not wanted:
            return [0.0] * n
        pool = self._lp_pool_greedy if greedy else self._lp_pool
        size = len(pool)
        start = rng.randrange(size)
        if start + n <= size:
            return pool[start : start + n]
        out = pool[start:]
        while len(out) < n:
            out.extend(pool[: n - len(out)])
        return out

    def input_logprobs(self, state: RequestState, start: int) -> list[float | None]:
        rng = random.Random(hash((self.config.seed, tuple(state.input_ids), 3)))
        out: list[float | None] = []
        for pos in range(start, len(state.input_ids)):
            out.append(None if pos == 0 else -rng.expovariate(1.0 / 2.5))
        return out
