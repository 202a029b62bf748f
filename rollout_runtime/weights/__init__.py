"""Live weights: load a new policy version into running SGLang servers, in place.

One implementation, three users: `rollout-runtime update-weights` (local mode), the operator (an
SGLangPool's `spec.weights`), and trainers that publish weights themselves::

    from rollout_runtime.weights import update_weights
    report = await update_weights(["http://router:30000"], "/ckpt/step_7", 7)
    if not report.ok:
        raise RuntimeError(report.summary())

Stdlib and aiohttp only (plus `rollout_runtime.contract` and the client's error parser), so the
operator image can import it. The version a server serves is `served_version(session, url)`
(`GET /model_info` -> `weight_version`; "default", a server's own weights, is version 0).
"""

from rollout_runtime.weights.calls import CallFailed, new_session
from rollout_runtime.weights.servers import listed_workers, resolve_servers, served_version
from rollout_runtime.weights.sync import ServerOutcome, UpdateReport, sync_servers, update_weights
from rollout_runtime.weights.target import PAUSE_MODES, PauseMode, WeightsTarget

__all__ = [
    "CallFailed", "PAUSE_MODES", "PauseMode", "ServerOutcome", "UpdateReport", "WeightsTarget", "listed_workers",
    "new_session", "resolve_servers", "served_version", "sync_servers", "update_weights",
]
