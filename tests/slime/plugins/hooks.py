"""Per-rollout hooks with slime's signatures; each records what it was given in a JSON-lines file."""

import json
import os


def _record(**fields):
    with open(os.environ["SLIME_TEST_RECORD"], "a") as fh:
        fh.write(json.dumps(fields) + "\n")


def process_all_samples(args, all_samples, data_source):
    _record(hook="all_samples", groups=len(all_samples), samples=sum(len(g) for g in all_samples),
            rewards=[[s.reward for s in g] for g in all_samples], data_source=type(data_source).__name__)


def log_rollout(rollout_id, args, samples, rollout_extra_metrics, rollout_time):
    _record(hook="log_rollout", rollout_id=rollout_id, samples=len(samples), metrics=sorted(rollout_extra_metrics or {}),
            seconds=rollout_time)
    return True


def log_eval(rollout_id, args, data, extra_metrics):
    _record(hook="log_eval", rollout_id=rollout_id, datasets=sorted(data))
    return True
