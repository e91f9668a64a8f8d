# shellcheck shell=bash
# Shared by the experiment scripts (sourced): where runs go, the training length, the seeds, and
# the evaluation every experiment uses. Environment knobs:
#   ROOT       where the runs go (default outputs/experiments; outputs/quick with QUICK=1)
#   SEQ_LEN    the training length L (default 128); evaluation runs at L, 2L, ..., 32L
#   DATA       the books, in PG-19's schema (default ../shared/data/pg19-sample)
#   SEEDS      training seeds, comma-separated (default 0,1,2; QUICK=1: 0)
#   EVAL_DOCS  test documents read per evaluation, round-robin over the books (default 16; null:
#              every one: 180 of 32L at L=128 in the sample, 11 times the time; one document
#              to 32L costs about 8 CPU-seconds per model and RoPE setting here)
#   QUICK=1    a first look: one seed, fewer steps, evaluation to 16L on 8 documents
# Every step resumes: finished training is skipped, and so is an evaluation already written.
set -euo pipefail
QUICK=${QUICK:-0}
if ((QUICK)); then ROOT=${ROOT:-outputs/quick}; else ROOT=${ROOT:-outputs/experiments}; fi
SEQ_LEN=${SEQ_LEN:-128}
[[ $SEQ_LEN =~ ^[1-9][0-9]*$ ]] || { echo "SEQ_LEN=$SEQ_LEN must be a positive whole number of tokens" >&2; exit 2; }
DATA=${DATA:-../shared/data/pg19-sample}
L=$SEQ_LEN
if ((QUICK)); then SEEDS=${SEEDS:-0}; else SEEDS=${SEEDS:-0,1,2}; fi
[[ $SEEDS =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "SEEDS=$SEEDS must be comma-separated whole numbers" >&2; exit 2; }
# shellcheck disable=SC2034  # used by the scripts that source this file
# (a sweep over seeds: add "seed=$SEEDS" with -m)
TRAIN_ARGS=("data.path=$DATA" "data.seq_len=$L" "model.arch.max_position_embeddings=$L"
            "run_dir=$ROOT/\${name}-seed\${seed}")
if ((QUICK)); then
    LENGTHS="[$L,$((2 * L)),$((4 * L)),$((8 * L)),$((16 * L))]"
    EVAL_DOCS=${EVAL_DOCS:-8}
else
    LENGTHS="[$L,$((2 * L)),$((4 * L)),$((8 * L)),$((16 * L)),$((32 * L))]"
    EVAL_DOCS=${EVAL_DOCS:-16}
fi
NTK='{rope_type:dynamic,factor:4.0}'

# runs NAME...: the run_dir of every NAME and seed, NAME by NAME.
runs() {
    local name seed
    for name in "$@"; do
        for seed in ${SEEDS//,/ }; do echo "$ROOT/$name-seed$seed"; done
    done
}

# evaluate RUN_DIR...: perplexity by length on the EVAL_SPLIT books (default test), or what MEASURE
# (an array of overrides) says, each checkpoint with RoPE as trained and with dynamic NTK (factor 4,
# which starts beyond max_position_embeddings = L); one Hydra sweep per setting over the runs not
# yet evaluated with it. With OUT set, each result goes to <run_dir>/eval/$OUT[-dynamic-x4]/ instead
# of the checkpoint's own folder (a second measurement of the same checkpoint).
evaluate() {
    local IFS=, rope todo run what=("${MEASURE[@]}") out=()
    ((${#what[@]})) || what=("eval.lengths=$LENGTHS" "eval.stride=$L" "eval.num_docs=$EVAL_DOCS" eval.batch_size=8
                             eval.max_batch_tokens=32768 "eval.passkey.lengths=[]")
    for rope in "${ROPES[@]}"; do
        todo=()
        for run in "$@"; do
            [[ -n $(results_of "$run" "$rope") ]] || todo+=("$run")
        done
        ((${#todo[@]})) || continue
        [[ -z $OUT ]] || out=("eval.output_dir=\${checkpoint}/eval/$OUT$(tag "$rope")")
        python -m train.evaluate -m "checkpoint=${todo[*]}" "eval.rope_scaling=$rope" "eval.split=$EVAL_SPLIT" \
            data=local "data.path=$DATA" "${what[@]}" "${out[@]}"
    done
}
EVAL_SPLIT="test"
ROPES=(null "$NTK")
MEASURE=()
OUT=""

# rope_suffix ROPE: how train.evaluate tags a folder for that RoPE setting: nothing for null,
# -<rope_type>-x<factor> otherwise ($NTK: -dynamic-x4)
rope_suffix() {
    [[ $1 == null ]] && return
    local type=${1#*rope_type:} factor=${1#*factor:}
    type=${type%%[,\}]*} factor=${factor%%[,\}]*}
    echo "-$type-x${factor%.0}"
}

# tag ROPE: the suffix of an evaluation's folder: the RoPE setting's, then the split unless test
tag() {
    printf %s "$(rope_suffix "$1")"
    [[ $EVAL_SPLIT == test ]] || printf %s "-$EVAL_SPLIT"
}

# results_of RUN_DIR ROPE: the eval.json of the run's latest checkpoint on EVAL_SPLIT with that RoPE
# setting, if there is one. train.evaluate names its folder step-N[-<rope>][-<split>].
results_of() {
    local tag
    tag=$(tag "$2")
    if [[ -n $OUT ]]; then
        [[ ! -f $1/eval/$OUT$tag/eval.json ]] || echo "$1/eval/$OUT$tag/eval.json"
    else
        find "$1/eval" -path "*/step-????????$tag/eval.json" 2>/dev/null | sort | tail -1
    fi
}

# in_window RUN_DIR...: perplexity at L on the whole test split, cut into documents of L tokens
# (5,792 at L=128 in the sample: every token read, so the in-window price gets a narrow
# interval), into <run_dir>/eval/in-window/. Dynamic NTK changes nothing within L: once per run.
in_window() {
    local IFS=, run todo=()
    for run in "$@"; do
        [[ -f $run/eval/in-window/eval.json ]] || todo+=("$run")
    done
    ((${#todo[@]})) || return 0
    python -m train.evaluate -m "checkpoint=${todo[*]}" "eval.output_dir=\${checkpoint}/eval/in-window" \
        data=local "data.path=$DATA" "eval.lengths=[$L]" "eval.stride=$L" eval.num_docs=null \
        eval.batch_size=16 "eval.passkey.lengths=[]"
}

# results RUN_DIR...: their eval.json files, every run with each RoPE setting in turn
results() {
    local rope run
    for rope in "${ROPES[@]}"; do
        for run in "$@"; do results_of "$run" "$rope"; done
    done
}
