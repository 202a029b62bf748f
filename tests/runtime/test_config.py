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


@pytest.mark.parametrize("settings,match", [
    (dict(rm_type="remote_rm"), r"rm_type remote_rm needs rm_url"),
    (dict(rm_type="boxed_remote_rm"), r"rm_type boxed_remote_rm needs rm_url"),
    (dict(rollout_max_response_len=None), r"rollout_max_response_len must be set.*custom_generate_function_path"),
], ids=["remote-rm", "boxed-remote-rm", "max-response-len"])
def test_check_runnable_refuses_settings_that_would_fail_mid_run(settings, match):
    base = dict(rollout_batch_size=2, num_rollout=1, rollout_max_response_len=64)
    args = RolloutConfig(**{**base, **settings})  # a partial config is still a config (plugins, slime args)
    with pytest.raises(ConfigError, match=match):
        args.check_runnable()


def test_check_runnable_accepts_what_makes_them_unnecessary():
    base = dict(rollout_batch_size=2, num_rollout=1)
    RolloutConfig(**base, rollout_max_response_len=64, eval_interval=5, eval_prompt_data=["aime", "a.jsonl"]).check_runnable()
    RolloutConfig(**base, rollout_max_response_len=64, rm_type="remote_rm", rm_url="http://rm:8000").check_runnable()
    RolloutConfig(**base, custom_generate_function_path="my_pkg.gen.generate").check_runnable()
    RolloutConfig(**base, rollout_function_path="rollout_runtime.sft_rollout.generate_rollout").check_runnable()


def test_run_refuses_a_config_that_is_not_runnable_before_it_starts(tmp_path, capsys):
    from rollout_runtime.cli import main
    from rollout_runtime.contract import EXIT_CONFIG_ERROR

    data = tmp_path / "d.jsonl"
    data.write_text('{"input": "1+1"}\n')
    code = main(["run", "--prompt-data", str(data), "--rollout-batch-size", "1", "--num-rollout", "1",
                 "--sglang-router-url", "http://127.0.0.1:9", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG_ERROR
    assert err.strip().splitlines()[-1].startswith("rollout-runtime: configuration error: rollout_max_response_len must be set")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("path,says", [
    ("/models/qwen-tokenizer", "no such local directory; give a folder holding tokenizer.json"),
    ("./tokenizer", "no such local directory; give a folder"),
])
def test_a_missing_tokenizer_names_the_setting_and_what_to_check(path, says):
    from rollout_runtime.misc import PluginError, load_tokenizer

    with pytest.raises(PluginError) as info:
        load_tokenizer(path)
    message = str(info.value)
    assert message.startswith(f"hf_checkpoint (dataset.tokenizer in a RolloutJob) {path!r}: ") and says in message
    assert "spec.runtime.volumes" in message and "Repo id must be in the form" not in message


def test_a_folder_without_a_tokenizer_says_so(tmp_path):
    from rollout_runtime.misc import PluginError, load_tokenizer

    with pytest.raises(PluginError, match=r"the directory holds no tokenizer that loads .*tokenizer.json"):
        load_tokenizer(str(tmp_path))
