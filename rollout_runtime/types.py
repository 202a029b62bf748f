"""slime's `Sample`: one prompt + response, the unit a rollout produces.

A dataclass (not pydantic) because thousands are created, copied and mutated per rollout,
and because slime plugins construct, deep-copy and set attributes on it freely. Field
names, order, defaults and the dict form (`to_dict` / `from_dict`) follow slime.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from rollout_runtime.misc import decode_int32_meta_array

_TOP_P_IDS = ("top_p_token_ids", "top_p_kept_token_ids")
_TOP_P_OFFSETS = ("top_p_token_offsets", "top_p_kept_token_offsets")


@dataclass
class Sample:
    """A single sample. `tokens` holds prompt + response ids; `loss_mask` covers the response."""

    group_index: int | None = None
    index: int | None = None
    rollout_id: int | None = None
    prompt: str | list[dict[str, Any]] = ""
    tokens: list[int] = field(default_factory=list)
    multimodal_inputs: dict[str, Any] | None = None
    multimodal_train_inputs: dict[str, Any] | None = None
    multimodal_train_input_id: str | None = None
    apply_chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    response: str = ""
    response_length: int = 0
    label: str | None = None
    reward: float | dict[str, Any] | None = None
    loss_mask: list[int] | None = None
    weight_versions: list[str] = field(default_factory=list)
    # Not in slime: which response tokens each weight version generated, [{"version", "start", "end"}] in
    # response-token positions (SGLang's meta_info.weight_versions of every call, shifted by where the
    # call's output starts). More than one version means the weights changed mid-sample.
    weight_version_spans: list[dict[str, Any]] = field(default_factory=list)
    rollout_log_probs: list[float] | None = None
    rollout_top_p_token_ids: list[int] | None = None
    rollout_top_p_token_offsets: list[int] | None = None
    rollout_routed_experts: list[list[int]] | None = None
    remove_sample: bool = False
    teacher_log_probs: list[float] | None = None

    class Status(Enum):
        PENDING = "pending"
        COMPLETED = "completed"
        TRUNCATED = "truncated"
        ABORTED = "aborted"
        # A recoverable failure (tool, API or parse error); may hold valid partial output.
        FAILED = "failed"

    status: "Sample.Status" = Status.PENDING
    metadata: dict[str, Any] = field(default_factory=dict)
    generate_function_path: str | None = None
    custom_rm_path: str | None = None
    train_metadata: dict[str, Any] | None = None
    session_id: str | None = None
    non_generation_time: float = 0.0

    @dataclass
    class SpecInfo:
        """Speculative-decoding counts over a sample's calls (slime's fields).

        SGLang 0.5.23 reports them per call in `meta_info` as `spec_num_correct_drafts` (accepted
        draft tokens), `spec_num_proposed_drafts` (verify steps x (draft tokens − 1)) and
        `spec_verify_ct` (verify steps), with `completion_tokens`; its own `spec_accept_rate` and
        `spec_accept_length` are these ratios for the one call. The names slime reads
        (`spec_accept_token_num`, `spec_draft_token_num`) are taken too, from servers that send them.
        """

        spec_accept_token_num: int = 0
        spec_draft_token_num: int = 0
        spec_verify_ct: int = 0
        completion_token_num: int = 0

        #: meta_info keys that carry the counts: SGLang 0.5.23's, then the older names slime reads
        ACCEPTED_KEYS = ("spec_num_correct_drafts", "spec_accept_token_num")
        DRAFTED_KEYS = ("spec_num_proposed_drafts", "spec_draft_token_num")

        @property
        def spec_accept_rate(self) -> float:
            return self.spec_accept_token_num / self.spec_draft_token_num if self.spec_draft_token_num else 0.0

        @property
        def spec_accept_length(self) -> float:
            return self.completion_token_num / self.spec_verify_ct if self.spec_verify_ct else 0.0

        @classmethod
        def reported_in(cls, meta_info: dict[str, Any]) -> bool:
            """Whether a call's meta_info carries speculative-decoding counts (SGLang sends them only
            when speculative decoding ran: `spec_verify_ct` > 0)."""
            return any(k in meta_info for k in cls.ACCEPTED_KEYS + cls.DRAFTED_KEYS)

        def add(self, meta_info: dict[str, Any]) -> None:
            """Accumulate one call's speculative-decoding counts from SGLang's meta_info."""
            self.spec_accept_token_num += _first_int(meta_info, self.ACCEPTED_KEYS)
            self.spec_draft_token_num += _first_int(meta_info, self.DRAFTED_KEYS)
            self.spec_verify_ct += int(meta_info.get("spec_verify_ct") or 0)
            self.completion_token_num += int(meta_info.get("completion_tokens") or 0)

        def to_dict(self) -> dict[str, int]:
            return {"spec_accept_token_num": self.spec_accept_token_num, "spec_draft_token_num": self.spec_draft_token_num,
                    "spec_verify_ct": self.spec_verify_ct, "completion_token_num": self.completion_token_num}

        @staticmethod
        def from_dict(data: dict[str, Any]) -> "Sample.SpecInfo":
            return Sample.SpecInfo(**{k: int(data.get(k, 0)) for k in ("spec_accept_token_num", "spec_draft_token_num",
                                                                      "spec_verify_ct", "completion_token_num")})

    @dataclass
    class PrefixCacheInfo:
        cached_tokens: int = 0
        total_prompt_tokens: int = 0

        @property
        def prefix_cache_hit_rate(self) -> float:
            return self.cached_tokens / self.total_prompt_tokens if self.total_prompt_tokens else 0.0

        def add(self, meta_info: dict[str, Any]) -> None:
            """Accumulate one call's prefix-cache counts (cached_tokens of prompt_tokens)."""
            self.cached_tokens += int(meta_info.get("cached_tokens") or 0)
            self.total_prompt_tokens += int(meta_info.get("prompt_tokens") or 0)

        def to_dict(self) -> dict[str, int]:
            return {"cached_tokens": self.cached_tokens, "total_prompt_tokens": self.total_prompt_tokens}

        @staticmethod
        def from_dict(data: dict[str, Any]) -> "Sample.PrefixCacheInfo":
            return Sample.PrefixCacheInfo(cached_tokens=int(data.get("cached_tokens", 0)),
                                          total_prompt_tokens=int(data.get("total_prompt_tokens", 0)))

    spec_info: "Sample.SpecInfo" = field(default_factory=lambda: Sample.SpecInfo())
    prefix_cache_info: "Sample.PrefixCacheInfo" = field(default_factory=lambda: Sample.PrefixCacheInfo())

    # ------------------------------------------------------------------ dict form
    def to_dict(self) -> dict[str, Any]:
        """slime's dict form: `__dict__` with the status as its string value."""
        out = dict(self.__dict__)
        out["status"] = self.status.value
        out["spec_info"] = self.spec_info.to_dict()
        out["prefix_cache_info"] = self.prefix_cache_info.to_dict()
        return out

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "Sample":
        """Inverse of `to_dict`; unknown keys are kept as attributes, as in slime."""
        data = dict(data)
        known = {f.name for f in fields(Sample)}
        sample = Sample(**{k: v for k, v in data.items() if k in known and k not in ("status", "spec_info", "prefix_cache_info")})
        if "status" in data:
            status = data["status"]
            sample.status = status if isinstance(status, Sample.Status) else Sample.Status(status)
        if isinstance(data.get("spec_info"), dict):
            sample.spec_info = Sample.SpecInfo.from_dict(data["spec_info"])
        if isinstance(data.get("prefix_cache_info"), dict):
            sample.prefix_cache_info = Sample.PrefixCacheInfo.from_dict(data["prefix_cache_info"])
        for key, value in data.items():
            if key not in known:
                setattr(sample, key, value)
        return sample

    # ------------------------------------------------------------------ helpers
    def get_reward_value(self, args: Any) -> Any:
        key = args.reward_key
        return self.reward[key] if key and isinstance(self.reward, dict) else self.reward

    @property
    def effective_response_length(self) -> int:
        return sum(self.loss_mask) if self.loss_mask is not None else self.response_length

    def append_response_tokens(
        self,
        args: Any = None,
        *,
        tokens: list[int] | None = None,
        log_probs: list[float] | None = None,
        trainable: bool = True,
        meta_info: dict[str, Any] | None = None,
        text: str | None = None,
        update_terminal_info: bool = True,
    ) -> None:
        """Append one engine call's output: tokens, log probs, mask, text, then meta info.

        Trainable tokens need their log probs (the trainer's importance ratios depend on
        them); non-trainable ones (tool output, observations) get mask 0 and log prob 0.0.
        """
        tokens = list(tokens or [])
        if trainable:
            if log_probs is None:
                log_probs = [] if not tokens else None
            if log_probs is None or len(log_probs) != len(tokens):
                raise ValueError(
                    f"append_response_tokens: {len(tokens)} trainable tokens need as many log_probs, got "
                    f"{None if log_probs is None else len(log_probs)}"
                )
        elif log_probs is not None:
            raise ValueError("append_response_tokens: non-trainable tokens must not carry log_probs")
        prev = self.response_length
        if self.loss_mask is None:
            self.loss_mask = [1] * prev
        if self.rollout_log_probs is None:
            if prev and any(self.loss_mask):
                raise ValueError("append_response_tokens: earlier trainable tokens have no rollout_log_probs")
            self.rollout_log_probs = [0.0] * prev
        self.tokens.extend(tokens)
        self.response_length += len(tokens)
        self.loss_mask.extend([1 if trainable else 0] * len(tokens))
        self.rollout_log_probs.extend(log_probs if trainable else [0.0] * len(tokens))
        if text:
            self.response += text
        self._append_top_p(meta_info or {}, len(tokens), pad=bool(tokens) and not trainable)
        if meta_info is not None:
            if update_terminal_info and meta_info.get("finish_reason"):
                self._add_weight_version_spans(meta_info, offset=prev)
            self._apply_meta_info(meta_info, update_terminal_info=update_terminal_info, new_tokens=len(tokens))

    def _add_weight_version_spans(self, meta: dict[str, Any], *, offset: int) -> None:
        for span in meta.get("weight_versions") or ():
            if isinstance(span, dict) and {"version", "start", "end"} <= span.keys():
                self.weight_version_spans.append({"version": str(span["version"]), "start": offset + int(span["start"]),
                                                  "end": offset + int(span["end"])})

    def _append_top_p(self, meta: dict[str, Any], n: int, *, pad: bool) -> None:
        """Top-p replay (`custom_params.return_top_p_token_ids`): CSR token ids + offsets, one span per response
        token, merged across calls; non-trainable tokens get empty spans. Lists here (slime keeps tensors)."""
        if not n:
            return
        ids = decode_int32_meta_array(meta, _TOP_P_IDS)
        offsets = decode_int32_meta_array(meta, _TOP_P_OFFSETS)
        if ids is None and offsets is None:
            if pad and self.rollout_top_p_token_offsets is not None:
                last = self.rollout_top_p_token_offsets[-1]
                self.rollout_top_p_token_offsets = list(self.rollout_top_p_token_offsets) + [last] * n
            return
        if ids is None or offsets is None:
            raise ValueError("top-p replay needs both token ids and offsets in meta_info")
        if not offsets or offsets[0] != 0 or offsets[-1] != len(ids) or len(offsets) != n + 1:
            raise ValueError(f"top-p replay offsets must start at 0, end at len(token_ids)={len(ids)} and number "
                             f"generated tokens + 1 = {n + 1}; got {len(offsets)} offsets")
        if self.rollout_top_p_token_offsets is None:
            # earlier response tokens (if any) had no top-p data: give them empty spans
            self.rollout_top_p_token_ids, self.rollout_top_p_token_offsets = [], [0] * (self.response_length - n + 1)
        base = self.rollout_top_p_token_offsets[-1]
        self.rollout_top_p_token_ids = list(self.rollout_top_p_token_ids or []) + ids
        self.rollout_top_p_token_offsets = list(self.rollout_top_p_token_offsets) + [o + base for o in offsets[1:]]

    def _apply_meta_info(self, meta: dict[str, Any], *, update_terminal_info: bool, new_tokens: int = 0) -> None:
        finish = meta.get("finish_reason")
        if not (update_terminal_info and finish):
            return
        # A call that generated nothing (aborted while queued: finish "Abort in waiting queue", no
        # prompt_tokens) adds no version: no token of the sample came from it. slime appends one anyway.
        if new_tokens and meta.get("weight_version") is not None:
            self.weight_versions.append(str(meta["weight_version"]))
        self.prefix_cache_info.add(meta)
        if Sample.SpecInfo.reported_in(meta):
            self.spec_info.add(meta)
        self.status = status_from_finish_reason(finish, self.status)


_FINISH_STATUS = {
    "stop": Sample.Status.COMPLETED,
    "length": Sample.Status.TRUNCATED,
    "abort": Sample.Status.ABORTED,
}


def _first_int(meta: dict[str, Any], keys: tuple[str, ...]) -> int:
    """The first of `keys` that `meta` has, as an int (0 if none)."""
    for key in keys:
        if meta.get(key) is not None:
            return int(meta[key])
    return 0


def status_from_finish_reason(finish: Any, default: Sample.Status) -> Sample.Status:
    kind = finish.get("type") if isinstance(finish, dict) else finish
    return _FINISH_STATUS.get(kind, default)


def flatten(group: list[Any]) -> list[Sample]:
    """The samples of a group, fan-out included.

    A group is a list of samples, or of lists of samples when a custom generate function returned
    several per prompt (slime's fan-out form); everything that counts, scores or writes samples
    walks it through here.
    """
    return [s for x in group for s in (x if isinstance(x, list) else [x])]
