#!/usr/bin/env bash
# Experiment 1, the paper's from-scratch table in miniature: vanilla, slack and exact CoCA
# trained from scratch at L tokens (identical but for model.attention), three seeds each, evaluated
# at L..32L with and without dynamic NTK. From the repository root:
#   launch/experiments/extrapolation.sh [training overrides...]
#   QUICK=1 launch/experiments/extrapolation.sh       # a first look: one seed, 500 steps a model
# Writes $ROOT/extrapolation_{vanilla,slack,exact}-seed<N>/ (runs, eval/), $ROOT/extrapolation.md
# (the tables), $ROOT/extrapolation-in-window.md (at L on the whole test split) and
# $ROOT/extrapolation.png. Run again to resume; finished steps are skipped.
# shellcheck source=launch/experiments/common.sh
. "$(dirname "$0")/common.sh"
NAMES=(extrapolation_vanilla extrapolation_slack extrapolation_exact)
mapfile -t RUNS < <(runs "${NAMES[@]}")
if ((QUICK)); then TRAIN_ARGS+=(trainer.max_steps=500 trainer.eval_every=500 trainer.save_every=500 optim.lr=2e-3 optim.warmup_steps=50); fi

python -m train.finetune -m "+experiment=$(IFS=,; echo "${NAMES[*]}")" "seed=$SEEDS" "${TRAIN_ARGS[@]}" "$@"
evaluate "${RUNS[@]}"
mapfile -t EVALS < <(results "${RUNS[@]}")
python -m train.report "${EVALS[@]}" --against "extrapolation_vanilla vanilla" \
    --against "extrapolation_vanilla vanilla + dynamic-x4" --out "$ROOT/extrapolation.md"
in_window "${RUNS[@]}"
python -m train.report "${RUNS[@]/%//eval/in-window/eval.json}" --against "extrapolation_vanilla vanilla" \
    --out "$ROOT/extrapolation-in-window.md"
python -m train.plot "$ROOT/extrapolation.png" "${EVALS[@]}" --title "Experiment 1: from scratch at L=$L"
