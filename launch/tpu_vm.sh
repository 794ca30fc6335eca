#!/usr/bin/env bash
# Train tinyllm_jax on a Cloud TPU VM or pod slice with gcloud.
#
#   launch/tpu_vm.sh [options] ACTION...      ACTION: create setup run logs delete all
#
# Example (a v4-32 slice: 4 hosts, 16 chips; everything printed, nothing run):
#   launch/tpu_vm.sh --dry-run --name=tinyllm-v4 --zone=us-central2-b \
#     --accelerator-type=v4-32 --config=configs/tiny.py --workdir=gs://BUCKET/tinyllm/run1 \
#     all -- --config.mesh.data=1 --config.mesh.fsdp=-1
#
# `create` makes the VM (all hosts of a slice), `setup` copies this checkout
# (or clones --git-url) to every worker and installs it with jax[tpu], `run`
# starts `python -m tinyllm_jax.main` on all workers at once (--worker=all),
# streams their output here and keeps a copy in ~/tinyllm.log on each worker,
# `logs` re-attaches to worker 0's log, `delete` removes the VM. `all` is
# create, setup, run, delete. Arguments after `--` go to tinyllm_jax.main.
# With --dry-run every command is printed (shell-quoted, runnable) instead.
#
# Multi-host slices need a --workdir every host can write (gs://...): Orbax
# writes checkpoints collectively, each host its own shards.
set -euo pipefail

usage() {
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'EOF'
Options:
  --name=NAME               TPU VM name (default tinyllm-$USER)
  --zone=ZONE               zone (required; or set CLOUDSDK_COMPUTE_ZONE)
  --project=PROJECT         project (default: gcloud's configured one)
  --accelerator-type=TYPE   v4-8, v4-32, v5litepod-16, v5p-8, v6e-8, ... (default v4-8)
  --version=RUNTIME         TPU software version (default from the accelerator type)
  --spot                    create a Spot VM (preemptible; the run resumes from --workdir)
  --git-url=URL             clone this repository on the workers instead of copying
  --git-ref=REF             branch or tag to clone (default main)
  --config=CONFIG           config for tinyllm_jax.main (default configs/tiny.py)
  --workdir=DIR             workdir on the workers; gs://... for multi-host slices
  --remote-dir=DIR          where the code goes on the workers (default tinyllm_jax)
  --dry-run                 print the commands, run nothing
  -h, --help                this text
EOF
}

NAME="tinyllm-${USER:-user}"
ZONE="${CLOUDSDK_COMPUTE_ZONE:-}"
PROJECT=""
ACCEL="v4-8"
VERSION=""
SPOT=0
GIT_URL=""
GIT_REF="main"
CONFIG="configs/tiny.py"
WORKDIR=""
REMOTE_DIR="tinyllm_jax"
DRY_RUN=0
ACTIONS=()
MAIN_ARGS=()

die() { echo "tpu_vm.sh: $*" >&2; exit 2; }

while (($#)); do
  case "$1" in
    --name=*) NAME="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --project=*) PROJECT="${1#*=}" ;;
    --accelerator-type=*) ACCEL="${1#*=}" ;;
    --version=*) VERSION="${1#*=}" ;;
    --spot) SPOT=1 ;;
    --git-url=*) GIT_URL="${1#*=}" ;;
    --git-ref=*) GIT_REF="${1#*=}" ;;
    --config=*) CONFIG="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --remote-dir=*) REMOTE_DIR="${1#*=}" ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; MAIN_ARGS=("$@"); break ;;
    create|setup|run|logs|delete) ACTIONS+=("$1") ;;
    all) ACTIONS+=(create setup run delete) ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

((${#ACTIONS[@]})) || die "no action given: create, setup, run, logs, delete or all (see --help)"
[[ -n "$ZONE" ]] || die "--zone is required (or set CLOUDSDK_COMPUTE_ZONE)"
[[ "$NAME" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] \
  || die "--name '$NAME' must be lower-case letters, digits and '-', starting with a letter"

# The runtime image each TPU generation boots (Cloud TPU software versions).
if [[ -z "$VERSION" ]]; then
  case "$ACCEL" in
    v4-*) VERSION="tpu-ubuntu2204-base" ;;
    v5litepod-*|v5e-*) VERSION="v2-alpha-tpuv5-lite" ;;
    v5p-*) VERSION="v2-alpha-tpuv5" ;;
    v6e-*) VERSION="v2-alpha-tpuv6e" ;;
    *) die "no default --version for accelerator type '$ACCEL'; pass --version=RUNTIME" ;;
  esac
fi

# The number in an accelerator type counts TensorCores (v4, v5p: 2 a chip,
# 4 chips a host) or chips (v5e, v6e: up to 8 a host); past 8 there is more
# than one host, and a local workdir would give each its own partial checkpoint.
multi_host() { (( ${ACCEL##*-} > 8 )); }

GCLOUD=(gcloud compute tpus tpu-vm)
LOC=(--zone="$ZONE")
[[ -n "$PROJECT" ]] && LOC+=(--project="$PROJECT")

# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run() {
  if ((DRY_RUN)); then
    join_cmd "$@"
    echo
  else
    "$@"
  fi
}

do_create() {
  local args=("${GCLOUD[@]}" create "$NAME" "${LOC[@]}" --accelerator-type="$ACCEL"
              --version="$VERSION")
  ((SPOT)) && args+=(--spot)
  run "${args[@]}"
}

do_setup() {
  local install
  install="python3 -m pip install -U pip && python3 -m pip install -U 'jax[tpu]' && "
  install+="python3 -m pip install -e $(shquote "$REMOTE_DIR")"
  if [[ -n "$GIT_URL" ]]; then
    local fetch
    fetch="rm -rf $(shquote "$REMOTE_DIR") && git clone --depth 1 --branch "
    fetch+="$(join_cmd "$GIT_REF" "$GIT_URL" "$REMOTE_DIR")"
    run "${GCLOUD[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command="$fetch && $install"
  else
    # This checkout, less VCS data, caches and local run directories.
    local here tarball
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    tarball="${TMPDIR:-/tmp}/${NAME}-code.tar.gz"
    run tar -C "$here" -czf "$tarball" --exclude-vcs --exclude=.venv --exclude=__pycache__ \
      --exclude='*.egg-info' --exclude=workdirs --exclude=.pytest_cache .
    run "${GCLOUD[@]}" scp "$tarball" "$NAME:code.tar.gz" "${LOC[@]}" --worker=all
    local unpack
    unpack="rm -rf $(shquote "$REMOTE_DIR") && mkdir -p $(shquote "$REMOTE_DIR") && "
    unpack+="tar -xzf code.tar.gz -C $(shquote "$REMOTE_DIR")"
    run "${GCLOUD[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command="$unpack && $install"
  fi
}

do_run() {
  if [[ -z "$WORKDIR" ]]; then
    multi_host && die "--workdir=gs://... is required on the multi-host slice $ACCEL"
    WORKDIR="workdirs/$NAME"
  fi
  if multi_host && [[ "$WORKDIR" != gs://* ]]; then
    die "--workdir must be shared by all hosts of $ACCEL (a gs:// path), got '$WORKDIR'"
  fi
  # initialize=yes: jax.distributed.initialize() finds the slice's hosts
  # from the TPU metadata server; on one host it is a no-op cluster of one.
  local main
  main="$(join_cmd python3 -m tinyllm_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
    --config.distributed.initialize=yes "${MAIN_ARGS[@]}")"
  local cmd
  cmd="cd $(shquote "$REMOTE_DIR") && $main 2>&1 | tee ~/tinyllm.log"
  run "${GCLOUD[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command="set -o pipefail; $cmd"
}

do_logs() {
  run "${GCLOUD[@]}" ssh "$NAME" "${LOC[@]}" --worker=0 --command="tail -n 200 -f ~/tinyllm.log"
}

do_delete() {
  run "${GCLOUD[@]}" delete "$NAME" "${LOC[@]}" --quiet
}

# `all` must not leave a slice running (and billing) when setup or run fails.
DELETE_ON_EXIT=0
on_exit() {
  local rc=$?
  if ((DELETE_ON_EXIT)); then
    echo "tpu_vm.sh: failed (exit $rc); deleting $NAME" >&2
    do_delete || true
  fi
  exit "$rc"
}
trap on_exit EXIT

for action in "${ACTIONS[@]}"; do
  "do_$action"
  if [[ "$action" == create && " ${ACTIONS[*]} " == *" delete "* ]]; then
    DELETE_ON_EXIT=1
  elif [[ "$action" == delete ]]; then
    DELETE_ON_EXIT=0
  fi
done
