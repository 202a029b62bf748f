"""slime's rollout function, served by a RolloutJob: `--rollout-function-path rollout_runtime.remote.generate_rollout`.

slime's trainer calls `generate_rollout(args, rollout_id, data_buffer, evaluation=False)` once per
training step and trains on the groups it returns. This one generates nothing: it waits for batch
`rollout_id` of a RolloutJob (or of a local `rollout-runtime run`) to be committed and returns it,
read with `rollout_runtime.reader.RolloutReader`, as slime's `RolloutFnTrainOutput(samples=groups)`
in the order the batch file holds. The trainer's checkpoint step is its position: after a restart at
step k slime asks for rollout k again and gets the same groups.

Which job, without another slime flag (slime's argparse accepts no unknown flag): environment
variables, or keys of slime's `--custom-config-path` YAML (which become attributes of `args`):

| attribute of args / environment | meaning |
| --- | --- |
| `kuberollout_job` / `KUBEROLLOUT_JOB` | the RolloutJob's name (read with the trainer's credentials) |
| `kuberollout_namespace` / `KUBEROLLOUT_NAMESPACE` | its namespace (default: kubectl's) |
| `kuberollout_output_dir` / `KUBEROLLOUT_OUTPUT_DIR` | where its batches are, as this trainer sees them (a local run's output dir, or where `spec.output.path` is mounted) |
| `kuberollout_timeout` / `KUBEROLLOUT_TIMEOUT` | seconds to wait for a batch (default: forever) |

With `evaluation=True` it evaluates in-process against slime's router, as slime's own function does
(`rollout_runtime.sglang_rollout.generate_rollout`): eval is not what a RolloutJob produces.

Samples come back as the caller's `Sample` class: slime's own when a real slime is installed (its
trainer compares `sample.status` with its own enum), else ours.
"""

from __future__ import annotations

import os
from typing import Any

from rollout_runtime.base_types import RolloutFnEvalOutput, RolloutFnTrainOutput
from rollout_runtime.reader import RolloutReader
from rollout_runtime.types import Sample

_READERS: dict[tuple[str | None, str | None, str | None], RolloutReader] = {}


def _setting(args: Any, name: str) -> str | None:
    value = getattr(args, f"kuberollout_{name}", None)
    if value in (None, ""):
        value = os.environ.get(f"KUBEROLLOUT_{name.upper()}") or None
    return None if value is None else str(value)


def reader_for(args: Any) -> RolloutReader:
    """The reader `args` (or the environment) names: a RolloutJob, or a local output folder. One per process."""
    job, namespace, output_dir = _setting(args, "job"), _setting(args, "namespace"), _setting(args, "output_dir")
    key = (job, namespace, output_dir)
    reader = _READERS.get(key)
    if reader is None:
        if job:
            reader = RolloutReader.from_rolloutjob(job, namespace, output_dir=output_dir)
        elif output_dir:
            reader = RolloutReader(output_dir)
        else:
            raise ValueError("rollout_runtime.remote.generate_rollout needs the RolloutJob to read from: set "
                             "KUBEROLLOUT_JOB (and KUBEROLLOUT_NAMESPACE), or KUBEROLLOUT_OUTPUT_DIR for a local "
                             "rollout-runtime run; or kuberollout_job / kuberollout_output_dir in the YAML of "
                             "--custom-config-path")
        _READERS[key] = reader
    return reader


def caller_sample_class() -> type:
    """slime's `Sample` when a real slime is importable, else ours (the slime import layer's is ours too)."""
    try:
        from slime.utils.types import Sample as SlimeSample  # type: ignore[import-not-found]
    except ImportError:
        return Sample
    return SlimeSample


def as_class(groups: list[list[Any]], cls: type) -> list[list[Any]]:
    """The groups with every sample rebuilt as `cls` (through slime's dict form), unless it already is one."""
    if cls is Sample:
        return groups

    def convert(member: Any) -> Any:
        return [convert(m) for m in member] if isinstance(member, list) else cls.from_dict(member.to_dict())

    return [convert(g) for g in groups]


def generate_rollout(args: Any, rollout_id: int, data_buffer: Any = None,
                     evaluation: bool = False) -> RolloutFnTrainOutput | RolloutFnEvalOutput:
    """Committed batch `rollout_id` of the RolloutJob as slime's `RolloutFnTrainOutput` (waiting for its commit)."""
    if evaluation:
        from rollout_runtime.rollout.batch_loop import generate_rollout as generate_in_process

        return generate_in_process(args, rollout_id, data_buffer, evaluation=True)
    timeout = _setting(args, "timeout")
    groups = reader_for(args).get(rollout_id, timeout=float(timeout) if timeout else None)
    return RolloutFnTrainOutput(samples=as_class(groups, caller_sample_class()))
