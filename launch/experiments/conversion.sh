#!/usr/bin/env bash
# Experiment 2, the paper's LLaMA conversion in miniature: the vanilla model of experiment 1 (its
# seed 0; run launch/experiments/extrapolation.sh first) stands in for LLaMA. It is converted to
# slack CoCA and fine-tuned at L with one budget (1200 steps), three seeds (data orders) each way:
#   conversion_vanilla            the parent fine-tuned as vanilla: the baseline to beat
#   conversion_kproj_all          every slice CoCA, W_t from W_k, every weight training (the old best)
#   conversion_lowfreq            CoCA on the low-frequency slices only (model.coca_slices=low_frequency)
#   conversion_layerwise          the layers switch to CoCA one by one over the first 600 steps
# The recipe is chosen on the validation books ($ROOT/conversion-validation.md); then every run is
# evaluated on the test books like experiment 1 ($ROOT/conversion.md, conversion.png). The chosen
# recipe (CHOSEN, default conversion_lowfreq) and the baseline are also trained 2x and 4x as long
# (BUDGETS, default "2 4"; seed 0 only: BUDGET_SEEDS) into $ROOT/conversion-budget.md.
# From the repository root:
#   launch/experiments/conversion.sh [training overrides...]
# shellcheck source=launch/experiments/common.sh
. "$(dirname "$0")/common.sh"
PARENT=$ROOT/extrapolation_vanilla-seed0
[[ -d $PARENT/checkpoints ]] || { echo "no parent run at $PARENT: run launch/experiments/extrapolation.sh first" >&2; exit 2; }
NAMES=(conversion_vanilla conversion_kproj_all conversion_lowfreq conversion_layerwise)
CHOSEN=${CHOSEN:-conversion_lowfreq}
BUDGETS=${BUDGETS:-2 4}
BUDGET_SEEDS=${BUDGET_SEEDS:-0}

python -m train.finetune -m "+experiment=$(IFS=,; echo "${NAMES[*]}")" "seed=$SEEDS" "model.init_from=$PARENT" \
    "${TRAIN_ARGS[@]}" "$@"
mapfile -t RUNS < <(runs "${NAMES[@]}")

# The choice, on the validation books (Jane Eyre and A Tale of Two Cities in the sample).
EVAL_SPLIT=validation ROPES=null evaluate "${RUNS[@]}"
mapfile -t EVALS < <(EVAL_SPLIT=validation ROPES=null results "${RUNS[@]}")
python -m train.report "${EVALS[@]}" --against "conversion_vanilla vanilla" --out "$ROOT/conversion-validation.md"

# Every run on the test books, as trained and with dynamic NTK, beside the parent.
evaluate "$PARENT" "${RUNS[@]}"
mapfile -t EVALS < <(results "$PARENT" "${RUNS[@]}")
python -m train.report "${EVALS[@]}" --against "conversion_vanilla vanilla" \
    --against "conversion_vanilla vanilla + dynamic-x4" --out "$ROOT/conversion.md"
python -m train.plot "$ROOT/conversion.png" "${EVALS[@]}" --title "Experiment 2: converting a vanilla model at L=$L"

# The budget: the chosen recipe and the baseline trained 2x and 4x as long.
BUDGET_NAMES=() AGAINST=()
for times in $BUDGETS; do
    steps=$((1200 * times))
    for name in conversion_vanilla "$CHOSEN"; do
        python -m train.finetune -m "+experiment=$name" "name=${name}_x$times" "seed=$BUDGET_SEEDS" \
            "model.init_from=$PARENT" "${TRAIN_ARGS[@]}" "trainer.max_steps=$steps" "trainer.save_every=$steps" "$@"
        BUDGET_NAMES+=("${name}_x$times")
    done
    AGAINST+=(--against "conversion_vanilla_x$times vanilla" --against "conversion_vanilla_x$times vanilla + dynamic-x4")
done
if ((${#BUDGET_NAMES[@]})); then
    mapfile -t BUDGET_RUNS < <(SEEDS=$BUDGET_SEEDS runs "${BUDGET_NAMES[@]}")
    evaluate "${BUDGET_RUNS[@]}"
    mapfile -t EVALS < <(results "${BUDGET_RUNS[@]}")
    python -m train.report "${EVALS[@]}" "${AGAINST[@]}" --out "$ROOT/conversion-budget.md"
fi
