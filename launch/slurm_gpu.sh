#!/usr/bin/env bash
# Submit tinyllm_jax to SLURM GPU nodes (wraps launch/slurm_gpu.sbatch).
#
#   launch/slurm_gpu.sh [options] [-- tinyllm_jax.main flags...]
#
# Example (2 nodes of 8 GPUs, one process per GPU; printed, not submitted):
#   launch/slurm_gpu.sh --dry-run --nodes=2 --gpus-per-node=8 --partition=gpu \
#     --workdir=/shared/runs/obqa-large --config=configs/tiny.py -- --config.mesh.fsdp=-1
#
# Run it from the repository root on a filesystem every node sees.
set -euo pipefail

usage() {
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'HELP'
Options:
  --nodes=N              nodes (default 2)
  --gpus-per-node=G      GPUs on each node (default 8)
  --per=gpu|node         one process per GPU (default) or one per node
  --cpus-per-gpu=C       CPU cores per GPU (default 8)
  --partition=P          SLURM partition
  --account=A            SLURM account
  --time=T               time limit (default 24:00:00)
  --job-name=NAME        (default tinyllm)
  --workdir=DIR          run directory on the shared filesystem (required)
  --config=CONFIG        config for tinyllm_jax.main (default configs/tiny.py)
  --dry-run              print the sbatch command and what every task will run
  -h, --help             this text
HELP
}

NODES=2
GPUS=8
PER=gpu
CPUS_PER_GPU=8
PARTITION=""
ACCOUNT=""
TIME="24:00:00"
JOB_NAME="tinyllm"
WORKDIR=""
CONFIG="configs/tiny.py"
DRY_RUN=0
MAIN_ARGS=()

die() { echo "slurm_gpu.sh: $*" >&2; exit 2; }

while (($#)); do
  case "$1" in
    --nodes=*) NODES="${1#*=}" ;;
    --gpus-per-node=*) GPUS="${1#*=}" ;;
    --per=*) PER="${1#*=}" ;;
    --cpus-per-gpu=*) CPUS_PER_GPU="${1#*=}" ;;
    --partition=*) PARTITION="${1#*=}" ;;
    --account=*) ACCOUNT="${1#*=}" ;;
    --time=*) TIME="${1#*=}" ;;
    --job-name=*) JOB_NAME="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --config=*) CONFIG="${1#*=}" ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; MAIN_ARGS=("$@"); break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

[[ -n "$WORKDIR" ]] || die "--workdir is required (a directory every node can write)"
for v in NODES GPUS CPUS_PER_GPU; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "--$(tr '[:upper:]_' '[:lower:]-' <<<"$v") must be a positive integer, got '${!v}'"
done
case "$PER" in
  gpu) TASKS_PER_NODE="$GPUS"; CPUS_PER_TASK="$CPUS_PER_GPU" ;;
  node) TASKS_PER_NODE=1; CPUS_PER_TASK=$((CPUS_PER_GPU * GPUS)) ;;
  *) die "--per must be gpu or node, got '$PER'" ;;
esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
SBATCH=(sbatch --job-name="$JOB_NAME" --nodes="$NODES" --ntasks-per-node="$TASKS_PER_NODE"
        --gpus-per-node="$GPUS" --cpus-per-task="$CPUS_PER_TASK" --time="$TIME"
        --chdir="$REPO" "--export=ALL,TINYLLM_REPO=$REPO")
[[ -n "$PARTITION" ]] && SBATCH+=(--partition="$PARTITION")
[[ -n "$ACCOUNT" ]] && SBATCH+=(--account="$ACCOUNT")
SBATCH+=("$HERE/slurm_gpu.sbatch" "$WORKDIR" "$CONFIG" "${MAIN_ARGS[@]}")

# shellcheck source=launch/common.sh
source "$HERE/common.sh"

if ((DRY_RUN)); then
  join_cmd "${SBATCH[@]}"
  echo
  total=$((NODES * TASKS_PER_NODE))
  echo "# then each of the $total tasks (rank R = \$SLURM_PROCID) runs, on the first node's coordinator:"
  printf '# '
  join_cmd python3 -m tinyllm_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
    --config.distributed.initialize=yes --config.distributed.coordinator_address='FIRST_NODE:PORT' \
    --config.distributed.num_processes="$total" --config.distributed.process_id='R' "${MAIN_ARGS[@]}"
  echo
else
  "${SBATCH[@]}"
fi
