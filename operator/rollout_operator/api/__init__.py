"""The API of `kuberollout.io/v1alpha1`, as pydantic models (the CRDs are generated from them).

- `rolloutjob_types.py` / `sglangpool_types.py`: the specs, the kinds' top-level models and CRD names.
- `rolloutjob_status.py` / `sglangpool_status.py`: the status models and, next to them, the
  phases, condition types and reasons (StrEnums), as KubeRay keeps its statuses beside its types.
- `printer_columns.py`: the `kubectl get` columns of both kinds.
- `common.py`: the model base, the typed resource (`CustomResource.from_body`), metav1.Condition
  and the narrow Kubernetes pass-through types; `crd_info.py`: CRD names and subresources.
"""
