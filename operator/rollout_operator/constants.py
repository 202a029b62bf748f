"""Names shared by the API models, the builders and the controller.

Kept in one place because the same strings appear in CRDs, labels on children, RBAC rules
and the runtime's ConfigMap contract; a typo in one of them would silently break watches.
"""

from __future__ import annotations

GROUP = "kuberollout.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "kuberollout"

POOL_KIND = "SGLangPool"
POOL_PLURAL = "sglangpools"
JOB_KIND = "RolloutJob"
JOB_PLURAL = "rolloutjobs"

# Labels on every child object. `app.kubernetes.io/*` for generic tooling; ours for selectors.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kuberollout-operator"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_POOL = "kuberollout.io/pool"
LABEL_POOL_ROLE = "kuberollout.io/role"  # server | router
LABEL_JOB = "kuberollout.io/rolloutjob"
LABEL_ATTEMPT = "kuberollout.io/attempt"

# Annotations.
ANN_SPEC_HASH = "kuberollout.io/spec-hash"  # hash of the desired child, to skip no-op patches
ANN_ATTEMPT = "kuberollout.io/attempt"  # on the state ConfigMap: the newest attempt (a fencing token)
ANN_PROGRESS_PREFIX = "kuberollout.io"  # kopf's progress storage prefix

# The runtime contract (rollout_runtime.runner / state_configmap).
ENV_ATTEMPT = "KUBEROLLOUT_ATTEMPT"
STATE_SUFFIX = "-state"
RUNTIME_SA_SUFFIX = "-runtime"
RUNTIME_CONTAINER = "runtime"
EXIT_CONFIG_ERROR = 2  # `rollout-runtime run` exits 2 on configuration errors: retrying cannot help

# Name limits enforced by CEL on the CRDs (children append suffixes to these names).
MAX_JOB_NAME = 52  # "<job>-<attempt>" must stay a 63-character label value
MAX_POOL_NAME = 50  # "<pool>-server" / "<pool>-router" must stay 63-character DNS labels

ROUTER_PORT = 30000
ROUTER_METRICS_PORT = 29000
DEFAULT_SERVER_PORT = 30000
