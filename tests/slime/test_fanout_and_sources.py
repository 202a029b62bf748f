"""Fan-out groups through the buffer and its committed state, and data sources written to slime's interface."""

from __future__ import annotations

import json

from rollout_runtime.async_utils import run
from rollout_runtime.config import RolloutConfig
from rollout_runtime.data_source import RolloutDataSourceWithBuffer, persists_itself, restore, snapshot
from rollout_runtime.misc import load_function
from rollout_runtime.rollout.generate import generate_and_rm, generate_and_rm_group
from rollout_runtime.state import DataSourceState
from rollout_runtime.types import Sample

P = "tests.slime.plugins"


def test_a_buffer_with_finished_fan_outs_round_trips_through_committed_json():
    args = RolloutConfig(rollout_batch_size=1, n_samples_per_prompt=2)
    source = RolloutDataSourceWithBuffer(args)
    done = Sample(index=0, response="a", reward=1.0, status=Sample.Status.COMPLETED)
    fan = [Sample(index=1, rollout_id=1, response="b", reward=0.0, status=Sample.Status.COMPLETED),
           Sample(index=1, rollout_id=1, response="b", reward=1.0, status=Sample.Status.COMPLETED)]
    source.add_samples([[done, fan]])
    state = DataSourceState(**json.loads(source.state_dict().model_dump_json()))
    again = RolloutDataSourceWithBuffer(args)
    again.load_state_dict(state)
    (group,) = again.buffer
    assert isinstance(group[0], Sample) and group[0].reward == 1.0
    assert isinstance(group[1], list) and [s.reward for s in group[1]] == [0.0, 1.0] and group[1][0].rollout_id == 1


def test_recycled_fan_outs_come_back_as_they_were_and_interrupted_ones_continue_from_the_prompt():
    args = RolloutConfig(rollout_batch_size=1, n_samples_per_prompt=2, partial_rollout=True,
                         custom_generate_function_path=f"{P}.fanout.interrupted", custom_rm_path=f"{P}.fanout.reward")
    load_function(f"{P}.fanout.interrupted")  # installs the slime layer the plugin imports through
    finished = [Sample(index=3, reward=1.0, status=Sample.Status.COMPLETED)]
    prompt = Sample(index=4, prompt="What is 1+1?")
    out = run(generate_and_rm_group(args, [finished, prompt], {"max_new_tokens": 8}))
    assert out[0] is finished  # a finished fan-out is kept, not generated again
    # the interrupted fan-out gives back the sample it was given, untouched here, so it is generated again
    assert out[1] is prompt and prompt.status == Sample.Status.PENDING and not prompt.response
    again = run(generate_and_rm(args, finished, {}))
    assert again is finished


def test_a_slime_interface_source_saves_itself_before_the_commit(tmp_path):
    cls = load_function(f"{P}.data_source.CountingDataSource")
    args = RolloutConfig(rollout_batch_size=2, n_samples_per_prompt=1, save=str(tmp_path))
    source = cls(args)
    assert persists_itself(source) and not persists_itself(RolloutDataSourceWithBuffer(args))
    source.get_samples(3)
    marker = snapshot(source, 5)
    assert marker.saved_by_source and (tmp_path / "rollout" / "counting_5.json").exists()
    fresh = cls(args)
    restore(fresh, marker, 5)
    assert fresh.next_i == 3 and fresh.get_samples(1)[0][0].label == "6"
