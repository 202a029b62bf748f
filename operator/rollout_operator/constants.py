"""Names only the operator uses: labels and annotations on its children, ports, name limits.

Kept in one place because the same strings appear in CRDs, labels on children, RBAC rules and
watch selectors; a typo in one of them would silently break watches. Facts shared with the
runtime (API group and kinds, the attempt variable and fencing annotation, the state ConfigMap's
name and keys, exit codes) are not here: they live in `rollout_runtime.contract`.
"""

from __future__ import annotations

from rollout_runtime.contract import GROUP

CATEGORY = "kuberollout"

# Labels on every child object. `app.kubernetes.io/*` for generic tooling; ours for selectors.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kuberollout-operator"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_POOL = f"{GROUP}/pool"
LABEL_POOL_ROLE = f"{GROUP}/role"  # server | router
LABEL_JOB = f"{GROUP}/rolloutjob"
LABEL_ATTEMPT = f"{GROUP}/attempt"  # on a batch Job and its pod: the attempt it runs

# The server pods' readiness gate (a pod condition the operator sets once the server serves the
# pool's weights; see builders/sglangpool_probes.py).
WEIGHTS_GATE = f"{GROUP}/weights-synced"

# Annotations.
ANN_SPEC_HASH = f"{GROUP}/spec-hash"  # hash of the desired child, to skip no-op patches
ANN_PROGRESS_PREFIX = GROUP  # kopf's progress storage prefix

# The runtime's pod and ServiceAccount.
RUNTIME_SA_SUFFIX = "-runtime"
RUNTIME_CONTAINER = "runtime"

# Name limits enforced by CEL on the CRDs (children append suffixes to these names).
MAX_JOB_NAME = 52  # "<job>-<attempt>" must stay a 63-character label value
MAX_POOL_NAME = 50  # "<pool>-server" / "<pool>-router" must stay 63-character DNS labels

ROUTER_PORT = 30000
ROUTER_METRICS_PORT = 29000
DEFAULT_SERVER_PORT = 30000
