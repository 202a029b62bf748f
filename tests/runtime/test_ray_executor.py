"""reward_executor: ray runs rule-based graders as Ray tasks on a local Ray instance."""

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'kuberollout[ray]')")

from rollout_runtime.config import RolloutConfig  # noqa: E402
from rollout_runtime.rm_hub import batched_async_rm  # noqa: E402
from rollout_runtime.types import Sample  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


async def test_math_rewards_on_ray(local_ray):
    args = RolloutConfig(rollout_batch_size=1, rm_type="math", reward_executor="ray")
    samples = [Sample(response="\\boxed{4}", label="4"), Sample(response="\\boxed{5}", label="4"),
               Sample(response="\\boxed{\\frac{1}{2}}", label="0.5")]
    assert await batched_async_rm(args, samples) == [1, 0, 1]
    assert ray.is_initialized()
