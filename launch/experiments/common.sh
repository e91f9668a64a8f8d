# Shared by the experiment scripts (sourced): where runs go, the training length, and the
# evaluation every experiment uses. Environment knobs:
#   ROOT     where the runs go (default outputs/experiments; outputs/quick with QUICK=1)
#   SEQ_LEN  the training length L (default 128); evaluation runs at L, 2L, ..., 32L
#   DATA     the books, in PG-19's schema (default ../shared/data/pg19-sample)
#   QUICK=1  a first look: fewer steps, evaluation to 16L, fewer passkey cases
set -euo pipefail
QUICK=${QUICK:-0}
if ((QUICK)); then ROOT=${ROOT:-outputs/quick}; else ROOT=${ROOT:-outputs/experiments}; fi
SEQ_LEN=${SEQ_LEN:-128}
[[ $SEQ_LEN =~ ^[1-9][0-9]*$ ]] || { echo "SEQ_LEN=$SEQ_LEN must be a positive whole number of tokens" >&2; exit 2; }
DATA=${DATA:-../shared/data/pg19-sample}
L=$SEQ_LEN
TRAIN_ARGS=("data.path=$DATA" "data.seq_len=$L" "model.arch.max_position_embeddings=$L" "run_dir=$ROOT/\${name}")
if ((QUICK)); then
    LENGTHS="[$L,$((2 * L)),$((4 * L)),$((8 * L)),$((16 * L))]"
    PASSKEY_CASES=10
else
    LENGTHS="[$L,$((2 * L)),$((4 * L)),$((8 * L)),$((16 * L)),$((32 * L))]"
    PASSKEY_CASES=20
fi
NTK='{rope_type:dynamic,factor:4.0}'
# The passkey prompt alone (key, its repetition, the question) is about 150 tokens: below
# L = 512 no prompt fits inside the training window, so there is nothing to extrapolate from.
if ((L >= 512)); then PASSKEY_LENGTHS=$LENGTHS; else PASSKEY_LENGTHS="[]"; fi

# evaluate RUN_DIR...: perplexity by length and passkey on the test books, each checkpoint with
# RoPE as trained and with dynamic NTK (factor 4, which starts beyond max_position_embeddings = L).
evaluate() {
    local IFS=,
    python -m train.evaluate -m "checkpoint=$*" "eval.rope_scaling=null,$NTK" \
        data=local "data.path=$DATA" "eval.lengths=$LENGTHS" "eval.stride=$L" eval.num_docs=4 \
        eval.batch_size=8 eval.max_batch_tokens=32768 "eval.passkey.lengths=$PASSKEY_LENGTHS" \
        "eval.passkey.cases=$PASSKEY_CASES"
}

# results RUN_DIR...: the eval.json files of those runs, as trained then with NTK, in that order
results() {
    local run
    for run in "$@"; do ls "$run"/eval/step-????????/eval.json | tail -1; done
    for run in "$@"; do ls "$run"/eval/step-*-dynamic-x4/eval.json | tail -1; done
}
