import json

import pytest

from rollout_runtime.output import read_batch, write_batch
from rollout_runtime.state import (DataSourceState, JsonFileStateStore, RolloutState, StateConflictError, offload_buffer,
                                   resolve_buffer)
from rollout_runtime.types import Sample


def test_sample_dict_round_trip_keeps_status_string_and_unknown_keys():
    s = Sample(group_index=1, index=3, prompt="hi", tokens=[1, 2, 3], response="x", response_length=1, label="5",
               reward={"score": 1.0}, loss_mask=[1], rollout_log_probs=[-0.5], status=Sample.Status.TRUNCATED,
               metadata={"rm_type": "math"})
    d = s.to_dict()
    assert d["status"] == "truncated"
    assert isinstance(d["spec_info"], dict) and isinstance(d["prefix_cache_info"], dict)
    json.dumps(d)  # JSON-safe
    d["extra_field"] = 7
    back = Sample.from_dict(d)
    assert back.status is Sample.Status.TRUNCATED and back.tokens == [1, 2, 3] and back.reward == {"score": 1.0}
    assert back.extra_field == 7


def test_append_response_tokens_maps_finish_reason_and_masks():
    s = Sample(tokens=[1, 2])
    s.append_response_tokens(tokens=[5, 6], log_probs=[-0.1, -0.2], text="ab",
                             meta_info={"finish_reason": {"type": "abort"}, "weight_version": "v1", "prompt_tokens": 2})
    assert s.status is Sample.Status.ABORTED and s.response_length == 2 and s.tokens == [1, 2, 5, 6]
    assert s.loss_mask == [1, 1] and s.weight_versions == ["v1"]
    s.append_response_tokens(tokens=[7], trainable=False)
    assert s.loss_mask == [1, 1, 0] and s.rollout_log_probs == [-0.1, -0.2, 0.0]
    s.append_response_tokens(tokens=[8], log_probs=[-1.0], meta_info={"finish_reason": {"type": "stop", "matched": 2}})
    assert s.status is Sample.Status.COMPLETED and s.response == "ab"
    s.append_response_tokens(tokens=[9], log_probs=[-1.0], meta_info={"finish_reason": {"type": "length", "length": 1}})
    assert s.status is Sample.Status.TRUNCATED
    with pytest.raises(ValueError, match="log_probs"):
        s.append_response_tokens(tokens=[1, 2], log_probs=[0.0])


def test_json_store_optimistic_concurrency_and_snapshots(tmp_path):
    store = JsonFileStateStore(tmp_path)
    assert store.read() == (None, None)
    v1 = store.commit(RolloutState(rollout_id=0, completed=4).stamp(), None)
    v2 = store.commit(RolloutState(rollout_id=1, completed=8).stamp(), v1)
    with pytest.raises(StateConflictError):
        store.commit(RolloutState(rollout_id=2), v1)  # a stale writer loses
    state, version = store.read()
    assert version == v2 and state.rollout_id == 1 and state.completed == 8
    assert store.read_snapshot(0).completed == 4
    assert (tmp_path / "rollout" / "global_dataset_state_dict_1.json").exists()


def test_buffer_offload_round_trip(tmp_path):
    buffer = [[Sample(index=i, tokens=[1, 2, 3]).to_dict()] for i in range(3)]
    state = RolloutState(rollout_id=5, data_source=DataSourceState(sample_offset=9, buffer=buffer))
    small = offload_buffer(state, str(tmp_path / "blobs"), "a1-0a1b2c")
    assert small.data_source.buffer is None and small.data_source.buffer_ref.endswith("buffer_000005.a1-0a1b2c.json")
    # Nothing of the buffer stays inline: the state is exactly the bare state plus the reference.
    bare = RolloutState(rollout_id=5, data_source=DataSourceState(sample_offset=9, buffer_ref=small.data_source.buffer_ref))
    assert small.model_dump_json() == bare.model_dump_json()
    assert resolve_buffer(small).data_source.buffer == buffer
    assert offload_buffer(RolloutState(rollout_id=6), str(tmp_path), "a1-0a1b2c").data_source.buffer_ref is None
    # A second commit of the same id by the same writer (one recording an eval) reuses its blob ...
    again = offload_buffer(state, str(tmp_path / "blobs"), "a1-0a1b2c")
    assert again.data_source.buffer_ref == small.data_source.buffer_ref
    other = state.model_copy(update={"data_source": DataSourceState(buffer=buffer[:1])})
    with pytest.raises(FileExistsError):  # ... and a published blob is never replaced by other bytes
        offload_buffer(other, str(tmp_path / "blobs"), "a1-0a1b2c")
    assert resolve_buffer(small).data_source.buffer == buffer


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_batch_write_read_round_trip(tmp_path, fmt):
    groups = [[Sample(group_index=g, index=g * 2 + i, prompt=[{"role": "user", "content": "q"}] if g else "q",
                      tokens=[1, 2], response="r", response_length=1, reward={"score": 1.0} if g else 0.5,
                      loss_mask=[1], status=Sample.Status.COMPLETED, metadata={"k": g}) for i in range(2)] for g in range(2)]
    url = write_batch(str(tmp_path), 3, groups, fmt, "a2-00ff00")
    assert url.endswith(f"rollout_000003.a2-00ff00.{fmt}")
    back = read_batch(url)
    assert [s.index for s in back] == [0, 1, 2, 3]
    assert back[0].reward == 0.5 and back[2].reward == {"score": 1.0}
    assert back[2].prompt == [{"role": "user", "content": "q"}] and back[0].prompt == "q"
    assert back[3].metadata == {"k": 1} and back[0].status is Sample.Status.COMPLETED and back[0].rollout_id == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"
