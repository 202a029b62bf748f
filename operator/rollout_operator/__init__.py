"""kuberollout's operator: SGLangPool and RolloutJob (`kuberollout.io/v1alpha1`), reconciled by kopf.

The import name is `rollout_operator` (the folder `operator/` has no `__init__.py`), so the
standard library's `operator` module is never shadowed.

Layout (pure in the middle, I/O at the edges):

- `api/`: the pydantic models, the single source of truth for the CRDs (`crdgen` writes
  `crds/*.yaml` from them). `*_types.py` hold the specs, `*_status.py` the status models with
  their phases, condition types and reasons (StrEnums), `printer_columns.py` the `kubectl get`
  columns.
- `builders/`: a typed resource -> its child manifests (pure).
- `reconcile/`: an observation -> a plan with the new typed status (pure). The only place that
  sets a phase: `reconcile/rolloutjob.py` (a RolloutJob's phase, step by step) and
  `reconcile/sglangpool.py` (with `reconcile/sglangpool_weights.py` for its live weights).
- `controller/`: reads kopf's indexes, runs the decisions, executes the plans (children,
  status, events, readiness gates), runs weight updates in the background (`controller/weights.py`),
  and requeues by each reconcile's `Result`.
- `handlers.py` wires kopf's watches and indexes to the controller (`kopf_fixes.py` fixes the
  one kopf race it hit: a namespace created while kopf starts was never watched); `kube.py` is the REST client
  (with typed API errors); `cli.py` is the `rollout-operator` console script.

What the operator shares with the runtime comes from `rollout_runtime.contract` (stdlib only);
besides it, the operator imports only `rollout_runtime.config` (the spec sections are built
from RolloutConfig's fields) and `rollout_runtime.weights` (the weight-update orchestration,
stdlib and aiohttp), so its image needs none of the runtime's heavy dependencies.
"""

__version__ = "0.1.0"
