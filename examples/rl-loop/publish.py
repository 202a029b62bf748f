"""Publishing a saved version to the engines: SGLang's `POST /update_weights_from_disk` on each.

Every engine gets `{"model_path": DIR, "weight_version": "N"}` at once. On a server that is not
paused, SGLang takes its weight-update lock: requests in flight finish under the old weights, new
ones wait, the weights load, and the server reports version N in `/model_info` and in the
`meta_info.weight_version` of everything it generates after. A 400 (a bad checkpoint) leaves the old
weights serving; it is raised here with the engine's message.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


class PublishError(RuntimeError):
    """An engine refused or failed to load the new version."""


def _update(url: str, path: Path, version: int, timeout: float) -> None:
    body = json.dumps({"model_path": str(path), "weight_version": str(version)}).encode()
    req = urllib.request.Request(f"{url}/update_weights_from_disk", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            reply = json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raise PublishError(f"{url} did not load version {version} from {path}: HTTP {e.code} "
                           f"{e.read().decode(errors='replace')[:500]}") from None
    if not reply.get("success", False):
        raise PublishError(f"{url} did not load version {version} from {path}: {reply}")


def publish(engine_urls: list[str], path: Path, version: int, timeout: float = 120.0) -> float:
    """Load `path` as weight version `version` into every engine; returns the seconds it took."""
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(engine_urls)) as pool:
        for f in [pool.submit(_update, u, path, version, timeout) for u in engine_urls]:
            f.result()
    return time.monotonic() - t0


def served_versions(engine_urls: list[str]) -> list[str]:
    """`weight_version` in each engine's `/model_info` (the version it serves now)."""
    out = []
    for url in engine_urls:
        with urllib.request.urlopen(f"{url}/model_info", timeout=10) as r:
            out.append(str(json.loads(r.read()).get("weight_version")))
    return out
