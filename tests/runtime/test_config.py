import pytest

from rollout_runtime.config import ConfigError, RolloutConfig, section_fields


def test_kwargs_defaults_are_slimes():
    args = RolloutConfig(rollout_batch_size=8, prompt_data="x.jsonl")
    assert args.rollout_batch_size == 8
    assert args.n_samples_per_prompt == 1
    assert args.sglang_server_concurrency == 512
    assert args.input_key == "input" and args.metadata_key == "metadata" and args.tool_key == "tools"
    assert args.rollout_temperature == 1.0 and args.rollout_top_p == 1.0 and args.rollout_top_k == -1
    assert args.rollout_seed == 42 and args.partial_rollout is False
    assert args.rollout_function_path == "rollout_runtime.sglang_rollout.generate_rollout"


def test_unknown_key_is_rejected_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'rollout_batch_sise' \(did you mean 'rollout_batch_size'\?\)"):
        RolloutConfig(rollout_batch_sise=8)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"rollout_batch_size: .*valid integer.*'eight'"):
        RolloutConfig(rollout_batch_size="eight")
    with pytest.raises(ConfigError, match=r"rollout_temperature: .*greater than 0"):
        RolloutConfig(rollout_batch_size=1, rollout_temperature=0)


def test_missing_required_key():
    with pytest.raises(ConfigError, match=r"rollout_batch_size: required.*--rollout-batch-size"):
        RolloutConfig()


def test_plugins_may_set_attributes_and_custom_config(tmp_path):
    custom = tmp_path / "custom.yaml"
    custom.write_text("my_plugin_threshold: 0.7\nmy_list: [1, 2]\n")
    args = RolloutConfig(rollout_batch_size=2, custom_config_path=str(custom))
    assert args.my_plugin_threshold == 0.7 and args.my_list == [1, 2]
    args.something_new = "ok"
    assert args.something_new == "ok"


def test_from_yaml_accepts_dashes_and_rejects_typos(tmp_path):
    good = tmp_path / "a.yaml"
    good.write_text("rollout-batch-size: 4\nn_samples_per_prompt: 2\nrollout_stop: ['</s>']\n")
    args = RolloutConfig.from_yaml(good)
    assert (args.rollout_batch_size, args.n_samples_per_prompt, args.rollout_stop) == (4, 2, ["</s>"])
    bad = tmp_path / "b.yaml"
    bad.write_text("rollout_batch_size: 4\nn_sample_per_prompt: 2\n")
    with pytest.raises(ConfigError, match="n_sample_per_prompt.*n_samples_per_prompt"):
        RolloutConfig.from_yaml(bad)


def test_from_cli_slime_flags():
    args = RolloutConfig.from_cli([
        "--rollout-batch-size", "8", "--n-samples-per-prompt", "4", "--partial-rollout",
        "--rollout-stop", "a", "b", "--rollout-stop-token-ids", "1", "2",
        "--apply-chat-template-kwargs", '{"enable_thinking": false}', "--rollout-top-p", "0.9",
    ])
    assert args.rollout_batch_size == 8 and args.n_samples_per_prompt == 4 and args.partial_rollout
    assert args.rollout_stop == ["a", "b"] and args.rollout_stop_token_ids == [1, 2]
    assert args.apply_chat_template_kwargs == {"enable_thinking": False} and args.rollout_top_p == 0.9
    assert RolloutConfig.from_cli(["--rollout-batch-size", "1", "--no-rollout-shuffle"]).rollout_shuffle is False


def test_from_cli_unknown_flag():
    with pytest.raises(ConfigError, match=r"unknown flag --rollout-bach-size \(did you mean --rollout-batch-size\?\)"):
        RolloutConfig.from_cli(["--rollout-bach-size", "8"])


def test_sections_round_trip_and_unknown_section_key():
    args = RolloutConfig.from_sections({
        "dataset": {"path": "d.jsonl", "inputKey": "q", "applyChatTemplate": True},
        "rollout": {"batchSize": 16, "samplesPerPrompt": 8, "partialRollout": True},
        "reward": {"type": "math"},
        "filters": {"dynamicSampling": "rollout_runtime.filter_hub.dynamic_sampling_filters.check_reward_nonzero_std"},
        "eval": {"interval": 5, "datasets": [{"name": "aime", "path": "e.jsonl"}]},
        "output": {"path": "/out", "format": "parquet"},
    })
    assert args.prompt_data == "d.jsonl" and args.input_key == "q" and args.apply_chat_template
    assert args.rollout_batch_size == 16 and args.n_samples_per_prompt == 8 and args.partial_rollout
    assert args.rm_type == "math" and [(d.name, d.path) for d in args.eval_datasets] == [("aime", "e.jsonl")]
    assert args.output_dir == "/out" and args.output_format == "parquet"
    with pytest.raises(ConfigError, match=r"spec.rollout.batchSise: unknown field \(did you mean 'batchSize'\?\)"):
        RolloutConfig.from_sections({"rollout": {"batchSise": 1}})
    fields = section_fields()
    assert fields["rollout_batch_size"] == ("rollout", "batchSize")
    assert len({v for v in fields.values()}) == len(fields), "two fields map to one CRD key"


def test_rollouts_to_run_and_router_url():
    args = RolloutConfig(rollout_batch_size=4, num_epoch=2, sglang_router_ip="127.0.0.1", sglang_router_port=3000)
    assert args.rollouts_to_run(10) == 5
    assert args.router_url == "http://127.0.0.1:3000"
    with pytest.raises(ConfigError, match="num_rollout or num_epoch"):
        RolloutConfig(rollout_batch_size=4).rollouts_to_run(10)
    with pytest.raises(ConfigError, match="sglang_router_ip"):
        RolloutConfig(rollout_batch_size=4).router_url
