#!/usr/bin/env bash
# Experiment 3, passkey retrieval beyond the training length: vanilla, slack and exact CoCA trained
# from scratch at L = 256 on books with retrieval sequences that fill the window
# (conf/experiment/passkey.yaml), at one budget and SEEDS (default 0,1,2), then asked for 5-digit
# keys in prompts of L..16L tokens and just past L (9L/8, 5L/4, 3L/2), CASES per length (default
# 50, at 5 depths), with and without dynamic NTK. The haystack is book text of the test split, as
# training's is of the training split; the original task's filler is a second evaluation. Each
# model is compared with vanilla on the same prompts (McNemar, in the tables).
# From the repository root:
#   launch/experiments/passkey.sh [training overrides...]
# Writes $ROOT/passkey_{vanilla,slack,exact}-seed<N>/, and $ROOT/passkey.md, passkey-near-L.md,
# passkey-filler.md and passkey.png.
SEQ_LEN=${SEQ_LEN:-256}
# shellcheck source=launch/experiments/common.sh
. "$(dirname "$0")/common.sh"
NAMES=(passkey_vanilla passkey_slack passkey_exact)
CASES=${CASES:-50}
LENGTHS="[$L,$((2 * L)),$((4 * L)),$((8 * L)),$((16 * L))]"
NEAR_L="[$((L * 9 / 8)),$((L * 5 / 4)),$((L * 3 / 2))]"
AGAINST=(--against "passkey_vanilla vanilla" --against "passkey_vanilla vanilla + dynamic-x4")
mapfile -t RUNS < <(runs "${NAMES[@]}")

python -m train.finetune -m "+experiment=$(IFS=,; echo "${NAMES[*]}")" "seed=$SEEDS" "${TRAIN_ARGS[@]}" "$@"

# report_passkey OUT NAME LENGTHS [overrides...]: measure into <run_dir>/eval/OUT[-dynamic-x4]/, then
# write $ROOT/NAME.md.
report_passkey() {
    local folder=$1 name=$2 lengths=$3 evals
    shift 3
    MEASURE=("eval.lengths=[]" "eval.passkey.lengths=$lengths" "eval.passkey.cases=$CASES" "$@")
    OUT=$folder evaluate "${RUNS[@]}"
    mapfile -t evals < <(OUT=$folder results "${RUNS[@]}")
    python -m train.report "${evals[@]}" "${AGAINST[@]}" --out "$ROOT/$name.md"
    [[ $folder != books ]] || python -m train.plot "$ROOT/passkey.png" "${evals[@]}" \
        --title "Experiment 3: passkey retrieval, trained at L=$L"
}
report_passkey books passkey "$LENGTHS"
report_passkey near-L passkey-near-L "$NEAR_L"
report_passkey filler passkey-filler "$LENGTHS" eval.passkey.haystack=filler
