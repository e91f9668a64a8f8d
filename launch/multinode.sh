#!/usr/bin/env bash
# Several nodes without SLURM: run this on every node, with the same overrides everywhere.
#   MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 NNODES=2 NODE_RANK=0 launch/multinode.sh [overrides]   # on 10.0.0.1
#   MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 NNODES=2 NODE_RANK=1 launch/multinode.sh [overrides]   # elsewhere
# NPROC: workers per node (default: one per visible GPU, or one without a GPU).
# RDZV_ID: names the rendezvous (default coca-longctx); change it to run two jobs on one port.
# Pass a fixed run_dir=... so that a restarted job finds its checkpoints: without SLURM the
# default run_dir is a new timestamp per launch. Exits with the trainer's status (75: saved
# after SIGTERM or the wall-time budget; run again to resume).
set -euo pipefail
# shellcheck source=launch/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

: "${MASTER_ADDR:?set MASTER_ADDR to an address of the node started with NODE_RANK=0}"
: "${NNODES:?set NNODES to the number of nodes (or MIN:MAX for an elastic job)}"
: "${NODE_RANK:?set NODE_RANK to 0 on the MASTER_ADDR node and 1..NNODES-1 elsewhere}"
[[ $NODE_RANK =~ ^[0-9]+$ ]] || die "NODE_RANK=$NODE_RANK is not a number"
port=${MASTER_PORT:-29500}
nproc=$(procs_per_node)

# c10d rendezvous: the rendezvous itself assigns node ranks, so NODE_RANK only says which node
# hosts the rendezvous store. Said explicitly, because guessing it from the hostname fails
# behind NAT, on secondary NICs, or with every node on one machine.
is_host=0
((NODE_RANK == 0)) && is_host=1
cmd=(torchrun --nnodes="$NNODES" --nproc_per_node="$nproc"
    --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$port" --rdzv_id="${RDZV_ID:-coca-longctx}"
    --rdzv_conf=is_host="$is_host" --max_restarts=0
    "$LAUNCH_DIR/worker.py" "$@")
log_environment "${cmd[@]}" || true
run_and_wait "${cmd[@]}"
exit "$LAUNCH_STATUS"
