"""The request to SGLang's native `/generate`: where it goes, what it carries, and what comes back.

Pure functions, so the payload can be checked without an engine. The shape follows slime's
default generate (and SGLang 0.5.23's `GenerateReqInput`): `input_ids` (prompt + any partial
response), `sampling_params` without unset values and with the remaining token budget,
`return_logprob: true`, and our `rid` so that `abort_scope: own` can abort exactly our requests.

sglang-router 0.3.2 re-serialises `sampling_params` without `spaces_between_special_tokens` (so
the server uses its default, true). Nothing here depends on it: responses are read as token ids,
and the text SGLang detokenizes is the same either way with a fast tokenizer (SGLang's default),
which ignores the flag; only a slow (sentencepiece) tokenizer would put spaces between special
tokens in `response`.
"""

from __future__ import annotations

from typing import Any, Callable

from rollout_runtime.config import ConfigError
from rollout_runtime.types import Sample

#: Header sglang-router 0.3.2's `manual` policy routes by: one key, one worker (sticky sessions).
ROUTING_KEY_HEADER = "X-SMG-Routing-Key"


def get_model_url(args: Any, model_name: str | None = None, endpoint: str = "/generate") -> str:
    """slime's URL rule: a named model's router from `sglang_model_routers`, else the router (or engine)."""
    # Not a RolloutConfig field: slime's RolloutManager sets it when it deploys several models.
    routers = getattr(args, "sglang_model_routers", None) or {}
    if model_name and model_name in routers:
        ip, port = routers[model_name]
        return f"http://{ip}:{port}{endpoint}"
    return f"{args.router_url}{endpoint}"


def prompt_ids(sample: Sample, encode: Callable[[str], list[int]], processor: Any = None) -> list[int]:
    """The ids to send: `sample.tokens` when it continues a partial response, else the encoded prompt (by the
    multimodal processor when there is one and the sample has images, so image tokens are counted as slime does)."""
    if sample.tokens:
        return list(sample.tokens)
    if isinstance(sample.prompt, list):
        raise ConfigError(f"sample {sample.index}: the prompt is a list of chat messages; set apply_chat_template "
                          f"(dataset.applyChatTemplate) so it is rendered to text, or use a custom generate function")
    if processor is not None and sample.multimodal_inputs and sample.multimodal_inputs.get("images"):
        from rollout_runtime.processing_utils import open_image

        images = [open_image(i) for i in sample.multimodal_inputs["images"]]
        return list(processor(text=[sample.prompt], images=images)["input_ids"][0])
    return encode(sample.prompt)


def image_data(sample: Sample) -> list[str] | None:
    """The sample's images as SGLang `image_data` (PNG data URIs), or None for a text-only sample."""
    images = (sample.multimodal_inputs or {}).get("images")
    if not images:
        return None
    from rollout_runtime.processing_utils import encode_image_for_rollout_engine

    return [encode_image_for_rollout_engine(i) for i in images]


def token_budget(sampling_params: dict[str, Any], sample: Sample) -> int:
    """max_new_tokens left for this sample: the configured budget minus what it generated before."""
    max_new = sampling_params.get("max_new_tokens")
    if max_new is None:
        raise ConfigError("rollout_max_response_len (rollout.maxResponseLength) must be set: it is max_new_tokens")
    remaining = max_new - sample.response_length
    assert remaining >= 0, f"sample {sample.index} already has {sample.response_length} > max_new_tokens={max_new}"
    return remaining


def generate_payload(rid: str, input_ids: list[int], sampling_params: dict[str, Any], max_new_tokens: int, *,
                     text: str | None = None, image_data: list[str] | None = None) -> dict[str, Any]:
    """The JSON body of one `/generate` call: `input_ids`, or `text` + `image_data` for a multimodal sample.

    `max_new_tokens` is this call's (the budget left, capped to the room in the context); a
    `min_new_tokens` above it is lowered to it.
    """
    params = {k: v for k, v in sampling_params.items() if v is not None}
    params["max_new_tokens"] = max_new_tokens
    if params.get("min_new_tokens", 0) > max_new_tokens:  # SGLang refuses min > max (400); the cap wins
        params["min_new_tokens"] = max_new_tokens
    payload: dict[str, Any] = {"rid": rid, "sampling_params": params, "return_logprob": True}
    if image_data:
        payload["text"] = text
        payload["image_data"] = image_data
    else:
        payload["input_ids"] = input_ids
    return payload


def routing_headers(sample: Sample) -> dict[str, str] | None:
    """`X-SMG-Routing-Key: <session id>` on every request of a sample that has a session.

    Sent whatever the router's policy: under `manual` every request of a session (a multi-turn
    sample's turns, a partial sample's continuation) goes to the worker that served its first one,
    where its prefix is cached; `random`, `round_robin`, `cache_aware` and `power_of_two` ignore it
    (measured through sglang-router 0.3.2), and the runtime need not know how the pool's router was
    started. (slime sends it only with `--router-policy consistent_hashing`, which 0.3.2's
    `--policy` does not offer.)
    """
    return {ROUTING_KEY_HEADER: sample.session_id} if sample.session_id else None


def response_tokens(output: dict[str, Any]) -> tuple[list[int], list[float]]:
    """New token ids and their log probs from a `/generate` response.

    `meta_info.output_token_logprobs` is a list of `[logprob, token_id, ...]`; without it (a
    server not asked for log probs) the ids come from `output_ids` with log prob 0.0.
    """
    meta = output.get("meta_info") or {}
    pairs = meta.get("output_token_logprobs")
    if pairs:
        return [p[1] for p in pairs], [p[0] for p in pairs]
    tokens = list(output.get("output_ids") or [])
    return tokens, [0.0] * len(tokens)
