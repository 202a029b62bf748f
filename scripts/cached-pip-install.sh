#!/usr/bin/env bash
# `pip install ARGS` through kuberollout's wheel cache, for a fresh virtual environment each time.
#
#   bash scripts/cached-pip-install.sh -e ".[test]"
#   PYTHON=/tmp/venv/bin/python bash scripts/cached-pip-install.sh --no-deps -r docker/requirements-runtime.txt
#
# Why: pip's own HTTP cache stays empty on machines whose package proxy strips the caching headers
# (no Cache-Control, ETag or Last-Modified: pip then stores nothing), so every fresh environment
# would download PyTorch's ~3 GB of wheels again. This keeps the wheels in a directory instead:
#
# 1. install offline from the cache (`--no-index --find-links`); pip still resolves ARGS, so
#    only what ARGS require is installed and a missing declaration still fails;
# 2. when that fails (a new or changed dependency the cache lacks), `pip download` what ARGS
#    need into the cache (resolving against the index, reusing what is there), then install
#    offline again.
#
# The cache only ever holds files: the environment is the caller's, new each time if it likes.
# Environment:
#   PYTHON                    interpreter whose pip installs (default python3)
#   KUBEROLLOUT_WHEELS        the cache (default ${XDG_CACHE_HOME:-~/.cache}/kuberollout/wheels);
#                             delete it at any time to prune old versions
#   KUBEROLLOUT_WHEELS=off    plain `pip install ARGS`, no cache
#   KUBEROLLOUT_WHEELS_REFRESH=1  download first, so newer releases that ARGS allow are picked up
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-python3}"
PIP=("$PY" -m pip --disable-pip-version-check)
INSTALL=("${PIP[@]}" install --root-user-action=ignore -q)
# Byte-compiling everything at install costs ~50 s for PyTorch alone; Python compiles what it
# imports and keeps it, so skip it, unless PYTHONDONTWRITEBYTECODE is set (as on these machines):
# then nothing is kept, every import of torch and transformers compiles from source again and
# the tests run over twice as slowly, so compile at install.
if [ -z "${PYTHONDONTWRITEBYTECODE:-}" ]; then INSTALL+=(--no-compile); fi
WHEELS="${KUBEROLLOUT_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/kuberollout/wheels}"

if [ "$WHEELS" = "off" ]; then
  exec "${INSTALL[@]}" "$@"
fi
mkdir -p "$WHEELS"

offline() { "${INSTALL[@]}" --no-index --find-links "$WHEELS" "$@"; }

if [ "${KUBEROLLOUT_WHEELS_REFRESH:-0}" != "1" ]; then
  log="$(mktemp)"
  if offline "$@" 2>"$log"; then rm -f "$log"; exit 0; fi
  echo "== the wheel cache $WHEELS lacks something for: $*" >&2
  grep -E '^ERROR' "$log" | head -3 >&2 || true
  rm -f "$log"
fi

# `pip download` takes the same requirement arguments except -e (an editable project is a local
# directory, which download resolves but never copies). The build backend (pyproject's
# build-system.requires) is added, since the offline install builds local projects in isolation.
download_args=()
for a in "$@"; do
  case "$a" in
    -e|--editable) ;;
    *) download_args+=("$a") ;;
  esac
done
mapfile -t build_requires < <("$PY" -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")')
echo "== downloading into the wheel cache $WHEELS" >&2
(
  # One writer at a time (two CI runs filling the same cache); readers need no lock.
  if command -v flock >/dev/null; then flock 9; fi
  "${PIP[@]}" download -q -d "$WHEELS" --find-links "$WHEELS" "${download_args[@]}"
  "${PIP[@]}" download -q -d "$WHEELS" --find-links "$WHEELS" "${build_requires[@]}"
) 9>"$WHEELS/.lock"
offline "$@"
