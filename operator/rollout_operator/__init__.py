"""kuberollout's operator: SGLangPool and RolloutJob (`kuberollout.io/v1alpha1`), reconciled by kopf.

The import name is `rollout_operator` (the folder `operator/` has no `__init__.py`), so the
standard library's `operator` module is never shadowed.

Layout: `api/` holds the pydantic models that are the single source of truth for the CRDs
(`crdgen` writes `crds/*.yaml` from them); `builders/` turns a resource into child manifests
(pure functions); `reconcile/` decides what to do from observed state (pure functions);
`controller` executes those decisions against the API; `handlers` wires kopf's watches to it;
`cli` is the `rollout-operator` console script.
"""

__version__ = "0.1.0"
