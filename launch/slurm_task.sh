#!/usr/bin/env bash
# One training process of a SLURM job; srun runs it once per task.
#
#   slurm_task.sh WORKDIR CONFIG [tinyllm_jax.main flags...]
#
# Needs TINYLLM_COORDINATOR (host:port, set by slurm_gpu.sbatch) and SLURM's
# per-task variables. Chooses the GPUs this process drives and passes the
# cluster layout to jax.distributed.initialize through the config.
set -euo pipefail

: "${SLURM_PROCID:?run by srun inside a SLURM job}"
: "${TINYLLM_COORDINATOR:?set by slurm_gpu.sbatch (host:port of process 0)}"
workdir="$1"
config="$2"
shift 2

tasks_on_node=$((SLURM_NTASKS / SLURM_JOB_NUM_NODES))
if [[ -n "${CUDA_VISIBLE_DEVICES:-}" && "$CUDA_VISIBLE_DEVICES" != *,* ]]; then
  # SLURM bound one GPU to this task: it is the process's only device.
  export JAX_LOCAL_DEVICE_IDS=0
elif ((tasks_on_node > 1)); then
  # One process per GPU, all GPUs visible: take the one matching the local rank.
  export JAX_LOCAL_DEVICE_IDS="$SLURM_LOCALID"
else
  # One process per node drives every GPU. Said explicitly because JAX's
  # SLURM detection would otherwise give a lone task only GPU $SLURM_LOCALID.
  gpus="${SLURM_GPUS_ON_NODE:-$(nvidia-smi -L | wc -l)}"
  JAX_LOCAL_DEVICE_IDS="$(seq -s, 0 $((gpus - 1)))"
  export JAX_LOCAL_DEVICE_IDS
fi

exec "${PYTHON:-python3}" -m tinyllm_jax.main --config="$config" --workdir="$workdir" \
  --config.distributed.initialize=yes \
  --config.distributed.coordinator_address="$TINYLLM_COORDINATOR" \
  --config.distributed.num_processes="$SLURM_NTASKS" \
  --config.distributed.process_id="$SLURM_PROCID" \
  "$@"
