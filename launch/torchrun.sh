#!/usr/bin/env bash
# One node, one worker per GPU:
#   launch/torchrun.sh [hydra overrides]            e.g. +experiment=coca_llama7b trainer.max_steps=100
#   NPROC=4 launch/torchrun.sh ...                  fewer workers than GPUs (or several on a CPU)
# Without a GPU it starts one worker. Exits with the trainer's status: 0 done, 75 stopped by
# SIGTERM or trainer.max_wall_time_min after saving (run the same command again to resume).
set -euo pipefail
# shellcheck source=launch/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

nproc=$(procs_per_node)
# --standalone: a rendezvous on a free local port, so several runs can share a machine.
cmd=(torchrun --standalone --nproc_per_node="$nproc" "$LAUNCH_DIR/worker.py" "$@")
log_environment "${cmd[@]}" || true
run_and_wait "${cmd[@]}"
exit "$LAUNCH_STATUS"
