"""A trainer process for the staleness tests: read batch k, "train" for a random time, publish version k+1.

It keeps its position the way a real trainer does, in a checkpoint file written after each step (then
it acks the batch); killed and started again, it resumes at its checkpoint step and reads that batch
again. Every read is logged as one JSON line: the rollout id, the sha256 of the batch file's bytes, and
this process's pid, so the test can prove that a batch read twice was the same both times.

Publishing goes through `rollout_runtime.weights.publish.publish_weights` to the router's servers. A
server that is down fails the publish; like a trainer that wants all its servers on the new weights,
it retries until every server took the version.

    python -m tests.staleness.trainer_proc --output-dir D --router URL --num-rollout N --workdir W --seed S
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import time
from pathlib import Path

from rollout_runtime.reader import RolloutReader
from rollout_runtime.weights.publish import PublishError, publish_weights


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--output-dir", required=True)
    p.add_argument("--router", required=True)
    p.add_argument("--num-rollout", type=int, required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-min", type=float, default=0.05)
    p.add_argument("--train-max", type=float, default=0.5)
    p.add_argument("--pause-mode", default="retract")
    p.add_argument("--batch-timeout", type=float, default=180.0)
    opts = p.parse_args()
    work = Path(opts.workdir)
    checkpoint = work / "checkpoint.json"
    step = json.loads(checkpoint.read_text())["step"] if checkpoint.exists() else 0
    rng = random.Random(opts.seed * 1000 + step)
    reader = RolloutReader(opts.output_dir, poll_interval=0.02, max_poll_interval=0.2)
    with open(work / "reads.jsonl", "a") as log:
        while step < opts.num_rollout:
            data = reader.get_bytes(step, timeout=opts.batch_timeout)
            log.write(json.dumps({"id": step, "sha": hashlib.sha256(data).hexdigest(), "pid": os.getpid(),
                                  "t": time.time()}) + "\n")
            log.flush()
            time.sleep(rng.uniform(opts.train_min, opts.train_max))  # the training step
            weights = work / f"v{step + 1}"
            weights.mkdir(exist_ok=True)
            deadline = time.monotonic() + 120
            while True:
                try:
                    publish_weights([opts.router], str(weights), step + 1, pause_mode=opts.pause_mode, timeout=60)
                    break
                except PublishError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)  # a server is down: the version goes to every server once it is back
            tmp = checkpoint.with_suffix(".tmp")
            tmp.write_text(json.dumps({"step": step + 1}))
            os.replace(tmp, checkpoint)
            reader.ack(step)
            step += 1


if __name__ == "__main__":
    main()
