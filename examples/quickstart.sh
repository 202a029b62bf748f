#!/usr/bin/env bash
# The quickstart: no cluster, no GPU. Installs what it needs, starts two dev engines serving the
# shipped tiny model on CPU behind the real SGLang router, and runs a few rollouts with
# over-sampling, dynamic sampling and partial rollout, writing batches and state to ./quickstart-out.
# Run it again to see it resume (it has nothing left to do); delete quickstart-out to start over.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
# The console script `rollout-runtime`, through the interpreter it was installed into: the same
# whether or not that environment's bin/ is on PATH (PYTHON=/path/to/venv/bin/python works too).
RR=("$PY" -m rollout_runtime.cli)
LOGS="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

echo "== installing kuberollout (dev engine and router extras)"
"$PY" -m pip install --disable-pip-version-check --root-user-action=ignore -q -e ".[quickstart]"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ok() {  # wait_ok URL NAME LOG PID
  for _ in $(seq 1 600); do
    if "$PY" -c "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" "$1" 2>/dev/null; then return 0; fi
    kill -0 "$4" 2>/dev/null || break  # it exited: no point waiting
    sleep 0.2
  done
  echo "$2 did not become ready; its log:" >&2; tail -30 "$3" >&2; exit 1
}

WORKERS=()
for i in 1 2; do
  port=$(free_port)
  "${RR[@]}" dev-engine --model examples/tiny-model --host 127.0.0.1 --port "$port" --threads 1 --seed "$i" \
    >"$LOGS/engine$i.log" 2>&1 &
  PIDS+=($!)
  WORKERS+=("http://127.0.0.1:$port")
done
for i in 0 1; do wait_ok "${WORKERS[$i]}/health_generate" "dev engine $((i + 1))" "$LOGS/engine$((i + 1)).log" "${PIDS[$i]}"; done
echo "== dev engines ready: ${WORKERS[*]}"

ENDPOINT="${WORKERS[0]}"
if "$PY" -c "import sglang_router" 2>/dev/null; then
  rport=$(free_port); mport=$(free_port)
  # round_robin: sglang-router 0.3.2's power_of_two needs a /get_load that SGLang 0.5.23 does not serve
  "$PY" -m sglang_router.launch_router --worker-urls "${WORKERS[@]}" --host 127.0.0.1 --port "$rport" \
    --policy round_robin --prometheus-host 127.0.0.1 --prometheus-port "$mport" >"$LOGS/router.log" 2>&1 &
  PIDS+=($!)
  ENDPOINT="http://127.0.0.1:$rport"
  wait_ok "$ENDPOINT/readiness" "sglang router" "$LOGS/router.log" "${PIDS[2]}"
  echo "== sglang router ready: $ENDPOINT"
else
  echo "== sglang-router is not installed: using one engine directly"
fi

echo "== rollout-runtime run --config examples/quickstart.yaml"
"${RR[@]}" run --config examples/quickstart.yaml --sglang-router-url "$ENDPOINT" "$@"
echo "== batches: $(ls quickstart-out/rollout_*.jsonl 2>/dev/null | wc -l) files in quickstart-out/; state in quickstart-out/.state/rollout/state.json"
