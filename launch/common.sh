# shellcheck shell=bash
# Sourced by launch/torchrun.sh, launch/multinode.sh and launch/slurm.sbatch; not run on its own.

# The trainer's status once it has saved a checkpoint after SIGTERM/SIGUSR1 or its wall-time
# budget: "run the same command again" (EXIT_PREEMPTED in train/cli.py; a test checks they agree).
EXIT_PREEMPTED=75

LAUNCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# torchrun waits this long for its workers after passing a SIGTERM on, then SIGKILLs them: 30 s by
# default, often less than saving a 7B checkpoint takes. Torch versions that do not read it keep 30 s.
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-900}

launch_log() {
    printf '[launch %s] %s\n' "$(date '+%F %T')" "$*" >&2
}

die() {
    launch_log "error: $*"
    exit 2
}

# GPUs this process may use: CUDA_VISIBLE_DEVICES when set (what torch will see), else what
# nvidia-smi lists, else 0.
visible_gpus() {
    if [[ -n ${CUDA_VISIBLE_DEVICES+set} ]]; then
        case $CUDA_VISIBLE_DEVICES in
            "" | -1 | NoDevFiles) echo 0 ;;
            *)
                local ids
                IFS=, read -ra ids <<<"$CUDA_VISIBLE_DEVICES"
                echo "${#ids[@]}"
                ;;
        esac
    elif command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true
    else
        echo 0
    fi
}

# Processes per node: NPROC if set, else one per visible GPU, else one (a CPU run).
procs_per_node() {
    local n=${NPROC:-}
    if [[ -z $n ]]; then
        n=$(visible_gpus)
        ((n > 0)) || n=1
    fi
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "NPROC=$n: need a positive number of processes per node"
    echo "$n"
}

# What a job log needs to explain a run afterwards. Never fatal: callers add `|| true`.
log_environment() {
    launch_log "host $(hostname) cwd $PWD"
    if [[ -n ${SLURM_JOB_ID:-} ]]; then
        launch_log "slurm job ${SLURM_JOB_ID} restart ${SLURM_RESTART_COUNT:-0}" \
            "nodes ${SLURM_JOB_NODELIST:-?} (${SLURM_NNODES:-?})"
    fi
    if command -v nvidia-smi >/dev/null 2>&1; then
        local line
        while IFS= read -r line; do
            launch_log "gpu $line"
        done < <(nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader 2>&1)
    else
        launch_log "gpus: nvidia-smi not found"
    fi
    local commit
    commit=$(git -C "$LAUNCH_DIR/.." describe --always --dirty 2>/dev/null) || commit=unknown
    launch_log "project $LAUNCH_DIR/.. at $commit"
    # importlib.metadata instead of importing torch: seconds faster, and works when CUDA is broken.
    launch_log "$(python - <<'PY' 2>&1
import platform
from importlib import metadata

def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"

print(f"python {platform.python_version()} ({platform.python_implementation()})",
      *(f"{name} {version(name)}" for name in ("torch", "deepspeed", "transformers", "flash-attn")))
PY
)"
    launch_log "python $(command -v python || echo 'not found'), torchrun $(command -v torchrun || echo 'not found')"
    local var
    while IFS= read -r var; do
        launch_log "env $var"
    done < <(env | grep -E '^(NCCL_|TORCH_NCCL_|TORCH_ELASTIC_|CUDA_VISIBLE_DEVICES=|OMP_NUM_THREADS=)' | sort)
    launch_log "command: $(printf '%q ' "$@")"
}

# How a stop signal reaches the workers. torchrun passes SIGTERM on to its workers; the SLURM
# script replaces this, since srun would turn it into a SIGKILL.
forward_stop() {
    kill -TERM "$LAUNCH_PID" 2>/dev/null || true
}

STOP_SIGNALLED=0
LAUNCH_PID=
# A trap handler under `set -e`: a failing command here would end the script, and a bare
# `return` in anything it calls would return the status from before the trap (the wait's 143).
on_stop_signal() {
    STOP_SIGNALLED=1
    launch_log "SIGTERM: asking the trainer to save a checkpoint and stop"
    if [[ -n $LAUNCH_PID ]]; then
        forward_stop || true
    fi
    return 0
}

# Runs "$@" (torchrun, or srun starting torchrun) and sets LAUNCH_STATUS to the trainer's exit
# status. torchrun reports any failed worker as its own status 1, so launch/worker.py leaves each
# worker's status in COCA_LAUNCH_STATUS_DIR; a 75 there means the checkpoint is saved.
# The command runs in the background because bash runs a trap only once a foreground command
# has finished; `wait` returns as soon as a trapped signal arrives.
run_and_wait() {
    local status_dir launcher_status=0 file code worker_status=
    status_dir=$(mktemp -d "${TMPDIR:-/tmp}/coca-launch.XXXXXX")
    export COCA_LAUNCH_STATUS_DIR=$status_dir
    trap on_stop_signal TERM
    "$@" &
    LAUNCH_PID=$!
    if ((STOP_SIGNALLED)); then
        forward_stop # the signal came before there was anything to pass it to
    fi
    # Each trapped signal ends a `wait` early: wait again until the command is gone, then once
    # more for its status (bash keeps it, even if the process was reaped meanwhile).
    while kill -0 "$LAUNCH_PID" 2>/dev/null; do
        wait "$LAUNCH_PID" || true
    done
    wait "$LAUNCH_PID" || launcher_status=$?
    for file in "$status_dir"/rank-*; do
        [[ -f $file ]] || continue
        code=
        read -r code <"$file" || [[ -n $code ]] || continue # no final newline: still a status
        [[ $code =~ ^[0-9]+$ ]] || continue
        if ((code == EXIT_PREEMPTED)); then
            worker_status=$code
            break
        elif ((code != 0)) && [[ -z $worker_status ]]; then
            worker_status=$code
        fi
    done
    rm -rf "$status_dir"
    LAUNCH_STATUS=$launcher_status
    if ((launcher_status != 0)) && [[ -n $worker_status ]]; then
        LAUNCH_STATUS=$worker_status
        launch_log "trainer exited $LAUNCH_STATUS (torchrun's own status, $launcher_status, and any" \
            "SignalException traceback from it only say that a worker stopped)"
    else
        launch_log "trainer exited $LAUNCH_STATUS"
    fi
}
