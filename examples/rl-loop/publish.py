"""Publishing a saved version to the serving side, with the runtime's weights API.

`rollout_runtime.weights.update_weights([router], path, version)` resolves the router's workers and,
on each at once, pauses generation (`retract`: running requests go back to the queue), loads the
directory with `/update_weights_from_disk` as `weight_version` N, continues, and reads the version
back from `/model_info`. Requests that were running resume under the new weights; the runtime
records which tokens each version generated (`Sample.weight_version_spans`).
"""

from __future__ import annotations

import time
from pathlib import Path


class PublishError(RuntimeError):
    """A server refused or failed to load the new version; the message is the weights API's summary."""


def publish(urls: list[str], path: Path, version: int) -> float:
    """Load `path` as weight version `version` behind `urls` (routers or servers); seconds it took."""
    from rollout_runtime.async_utils import run
    from rollout_runtime.weights import update_weights

    t0 = time.monotonic()
    report = run(update_weights(urls, str(path), version))
    if not report.ok:
        raise PublishError(f"version {version} from {path}: {report.summary()}")
    return time.monotonic() - t0


def served_versions(urls: list[str]) -> list[int]:
    """The version each server serves now (`weight_version` in `/model_info`; "default" is 0)."""
    from rollout_runtime.async_utils import run
    from rollout_runtime.weights import new_session, served_version

    async def read() -> list[int]:
        async with new_session() as session:
            return [(await served_version(session, u))[0] for u in urls]

    return run(read())
