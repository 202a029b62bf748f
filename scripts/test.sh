#!/usr/bin/env bash
# The whole test suite, on a fresh machine: install the project with its test extras into the
# active Python (through the wheel cache: scripts/cached-pip-install.sh), build the test control
# plane's binaries when the cache lacks them (slow the first time: see docs/contributing-cluster.md),
# then run pytest. Extra arguments go to pytest. CI runs this in a new virtual environment (.ci/run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-python3}"
echo "== installing kuberollout with test extras" >&2
PYTHON="$PY" bash scripts/cached-pip-install.sh -e ".[test]"
echo "== installed in ${SECONDS}s" >&2

if [ "${KUBEROLLOUT_SKIP_CLUSTER:-0}" != "1" ] && [ "${USE_EXISTING_CLUSTER:-0}" != "1" ] && [ -z "${KUBEROLLOUT_K8S_BIN:-}" ]; then
  echo "== control-plane binaries (built once, then cached)" >&2
  bash tests/cluster/build.sh >/dev/null
fi

echo "== pytest" >&2
exec "$PY" -m pytest -q -p no:cacheprovider "$@"
