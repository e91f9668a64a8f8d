#!/usr/bin/env bash
# Experiment 3, passkey retrieval beyond the training length: vanilla, slack and exact CoCA trained
# from scratch at L = 256 with retrieval sequences mixed into the books (conf/experiment/passkey.yaml),
# then asked for 5-digit keys in prompts of L..32L tokens (CASES per length, default 50, at 5
# depths) with and without dynamic NTK, then just past L (9L/8, 5L/4, 3L/2), where retrieval fades.
# From the repository root:
#   launch/experiments/passkey.sh [training overrides...]
# Writes $ROOT/passkey_{vanilla,slack,exact}-seed<N>/, $ROOT/passkey.md, $ROOT/passkey-near-L.md
# and $ROOT/passkey.png.
SEQ_LEN=${SEQ_LEN:-256}
SEEDS=${SEEDS:-0}
# shellcheck source=launch/experiments/common.sh
. "$(dirname "$0")/common.sh"
NAMES=(passkey_vanilla passkey_slack passkey_exact)
CASES=${CASES:-50}
mapfile -t RUNS < <(runs "${NAMES[@]}")

python -m train.finetune -m "+experiment=$(IFS=,; echo "${NAMES[*]}")" "seed=$SEEDS" "${TRAIN_ARGS[@]}" "$@"
MEASURE=("eval.lengths=[]" "eval.passkey.lengths=$LENGTHS" "eval.passkey.cases=$CASES")
evaluate "${RUNS[@]}"
mapfile -t EVALS < <(results "${RUNS[@]}")
python -m train.report "${EVALS[@]}" --out "$ROOT/passkey.md"
python -m train.plot "$ROOT/passkey.png" "${EVALS[@]}" --title "Experiment 3: passkey retrieval, trained at L=$L"

# Just past L, into <run_dir>/eval/near-L[-dynamic-x4]/.
MEASURE=("eval.lengths=[]" "eval.passkey.lengths=[$((L * 9 / 8)),$((L * 5 / 4)),$((L * 3 / 2))]"
         "eval.passkey.cases=$CASES")
OUT=near-L evaluate "${RUNS[@]}"
mapfile -t NEAR < <(OUT=near-L results "${RUNS[@]}")
python -m train.report "${NEAR[@]}" --out "$ROOT/passkey-near-L.md"
