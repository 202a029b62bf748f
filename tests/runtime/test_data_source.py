import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rollout_runtime.config import RolloutConfig
from rollout_runtime.data_source import RolloutDataSource, RolloutDataSourceWithBuffer
from rollout_runtime.dataset import DatasetError
from rollout_runtime.state import JsonFileStateStore
from rollout_runtime.types import Sample
from tests.conftest import write_jsonl


def make_args(path, **kw):
    base = dict(prompt_data=path, input_key="prompt", label_key="label", rollout_batch_size=4, n_samples_per_prompt=3)
    base.update(kw)
    return RolloutConfig(**base)


def test_groups_indices_and_epoch_wrap(tmp_path, arith_rows):
    path = write_jsonl(tmp_path / "d.jsonl", arith_rows[:5])
    ds = RolloutDataSource(make_args(path))
    assert len(ds) == 5
    groups = ds.get_samples(4)
    assert [len(g) for g in groups] == [3, 3, 3, 3]
    assert [s.index for g in groups for s in g] == list(range(12))
    assert [g[0].group_index for g in groups] == [0, 1, 2, 3]
    assert groups[0][0].prompt == "What is 10+20?" and groups[0][0].label == "30"
    groups[0][0].metadata["x"] = 1
    assert "x" not in groups[0][1].metadata, "group members must not share mutable state"
    more = ds.get_samples(3)  # one from epoch 0, two from epoch 1
    assert ds.epoch_id == 1 and ds.sample_offset == 2
    assert [g[0].prompt for g in more] == ["What is 14+28?", "What is 10+20?", "What is 11+22?"]
    assert len(ds.get_samples(12)) == 12  # more than one epoch in one call


def test_shuffle_is_seeded_per_epoch(tmp_path, arith_rows):
    path = write_jsonl(tmp_path / "d.jsonl", arith_rows[:10])
    a = RolloutDataSource(make_args(path, rollout_shuffle=True, n_samples_per_prompt=1))
    b = RolloutDataSource(make_args(path, rollout_shuffle=True, n_samples_per_prompt=1))
    ea = [g[0].prompt for g in a.get_samples(10)]
    assert ea == [g[0].prompt for g in b.get_samples(10)]
    assert ea != [r["prompt"] for r in arith_rows[:10]]
    assert [g[0].prompt for g in a.get_samples(10)] != ea  # a new epoch, a new order


def test_parquet_chat_template_tools_and_prompt_length(tmp_path, tiny_tokenizer_path):
    rows = [{"q": [{"role": "user", "content": "What is 1+1?"}], "label": "2", "tools": json.dumps([{"name": "calc"}])},
            {"q": [{"role": "user", "content": "What is 2+2?"}], "label": "4", "tools": None},
            {"q": [{"role": "user", "content": "What is " + "9+" * 200 + "9?"}], "label": "x", "tools": None}]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    ds = RolloutDataSource(make_args(str(path), input_key="q", apply_chat_template=True, hf_checkpoint=tiny_tokenizer_path,
                                     rollout_max_prompt_len=64, n_samples_per_prompt=1))
    assert len(ds) == 2  # the long prompt was dropped
    first = ds.get_samples(1)[0][0]
    assert first.prompt.startswith("<|im_start|>user\nWhat is 1+1?<|im_end|>") and first.prompt.endswith("<|im_start|>assistant\n")
    assert first.metadata["tools"] == [{"name": "calc"}]


def test_bad_rows_are_rejected_clearly(tmp_path, arith_rows):
    path = write_jsonl(tmp_path / "d.jsonl", arith_rows[:3] + [{"question": "x", "label": "1"}])
    with pytest.raises(DatasetError, match=r"row 3 has no input key 'prompt' \(keys: label, question\).*input_key"):
        RolloutDataSource(make_args(path))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "label": "1"}\n{"prompt": "b", \n')
    with pytest.raises(DatasetError, match="line 2 is not valid JSON"):
        RolloutDataSource(make_args(str(bad)))
    path2 = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "a"}])
    with pytest.raises(DatasetError, match="no label key 'label'"):
        RolloutDataSource(make_args(path2))
    with pytest.raises(DatasetError, match="not found"):
        RolloutDataSource(make_args(str(tmp_path / "missing.jsonl")))


def test_row_slice(tmp_path, arith_rows):
    path = write_jsonl(tmp_path / "d.jsonl", arith_rows[:10])
    assert len(RolloutDataSource(make_args(path + "@[2:5]"))) == 3


def test_buffer_first_fifo_and_custom_filter(tmp_path, arith_rows):
    path = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    ds = RolloutDataSourceWithBuffer(make_args(path))
    first = ds.get_samples(3)
    ds.add_samples([first[2], first[0]])
    assert ds.get_buffer_length() == 2
    nxt = ds.get_samples(3)
    assert [g[0].group_index for g in nxt] == [2, 0, 3]  # buffered first, FIFO, then the dataset
    assert ds.get_buffer_length() == 0
    with pytest.raises(ValueError, match="expected n_samples_per_prompt=3"):
        ds.add_samples([[Sample()]])


def newest_first(args, rollout_id, buffer, num_samples):
    buffer.sort(key=lambda g: -g[0].group_index)
    out = buffer[:num_samples]
    del buffer[:num_samples]
    return out


def test_custom_buffer_filter(tmp_path, arith_rows):
    path = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    ds = RolloutDataSourceWithBuffer(make_args(path, buffer_filter_path=f"{__name__}.newest_first"))
    groups = ds.get_samples(3)
    ds.add_samples(groups)
    assert [g[0].group_index for g in ds.get_samples(2)] == [2, 1]


def test_save_load_position_and_buffer(tmp_path, arith_rows):
    path = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    args = make_args(path, save=str(tmp_path / "ckpt"), rollout_shuffle=True)
    ds = RolloutDataSourceWithBuffer(args)
    groups = ds.get_samples(5)
    groups[1][0].tokens = [1, 2, 3]
    groups[1][0].status = Sample.Status.ABORTED
    ds.add_samples([groups[1]])
    ds.save(0)
    expected_next = [g[0].prompt for g in ds.get_samples(3)]

    fresh = RolloutDataSourceWithBuffer(args)
    fresh.load(0)
    assert (fresh.epoch_id, fresh.sample_offset, fresh.sample_index, fresh.sample_group_index) == (0, 5, 15, 5)
    assert fresh.get_buffer_length() == 1
    restored = fresh.buffer[0][0]
    assert restored.tokens == [1, 2, 3] and restored.status is Sample.Status.ABORTED
    assert [g[0].prompt for g in fresh.get_samples(3)] == expected_next
    assert JsonFileStateStore(tmp_path / "ckpt").read_snapshot(0) is not None
