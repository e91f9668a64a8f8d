#!/usr/bin/env bash
# Experiment 2, the paper's LLaMA conversion in miniature: the vanilla models of experiment 1 (run
# launch/experiments/extrapolation.sh first) stand in for LLaMA: a conversion with seed s starts from
# experiment 1's vanilla seed s, so the seed spread includes the parent's. Each is converted to
# slack CoCA and fine-tuned at L with one budget (600 steps, conf/experiment/conversion.yaml) in
# each of these ways:
#   conversion_vanilla     the parent fine-tuned as vanilla: the baseline to beat
#   conversion_kproj_all   every slice CoCA, W_t from W_k, every weight training (the old best)
#   conversion_lowfreq     CoCA on the low-frequency slices only (model.coca_slices=low_frequency)
#   conversion_fit         W_t fitted to the parent's scores by least squares (model.t_init=fit)
# 1. Every way with seed 0, evaluated on the validation books (VAL_DOCS documents, default 12):
#    $ROOT/conversion-validation.md. The recipe is chosen there, never on the test books.
# 2. The chosen one (CHOSEN, default conversion_lowfreq) and the baseline with the other SEEDS.
# 3. Every run on the test books, as trained and with dynamic NTK: $ROOT/conversion.md and .png;
#    at L on the whole test split: $ROOT/conversion-in-window.md.
# 4. The chosen one and the baseline 2x and 4x as long (BUDGETS, default "2 4"; BUDGETS= skips it; seed 0):
#    $ROOT/conversion-budget.md and conversion-budget-in-window.md.
# From the repository root:
#   launch/experiments/conversion.sh [training overrides...]
# shellcheck source=launch/experiments/common.sh
. "$(dirname "$0")/common.sh"
mapfile -t PARENTS < <(runs extrapolation_vanilla)
for parent in "${PARENTS[@]}"; do
    [[ -d $parent/checkpoints ]] || { echo "no parent run at $parent: run launch/experiments/extrapolation.sh first" >&2; exit 2; }
done
PARENT="model.init_from=$ROOT/extrapolation_vanilla-seed\${seed}"  # Hydra resolves it per seed
NAMES=(conversion_vanilla conversion_kproj_all conversion_lowfreq conversion_fit)
CHOSEN=${CHOSEN:-conversion_lowfreq}
BUDGETS=${BUDGETS-2 4}  # set and empty: no budget runs
VAL_DOCS=${VAL_DOCS:-12}

train() {  # train NAME SEEDS [overrides]: one sweep over the seeds, from the parent
    python -m train.finetune -m "+experiment=$1" "seed=$2" "$PARENT" "${TRAIN_ARGS[@]}" "${@:3}"
}

# 1. The choice, on the validation books (Jane Eyre and A Tale of Two Cities in the sample).
python -m train.finetune -m "+experiment=$(IFS=,; echo "${NAMES[*]}")" seed=0 "$PARENT" \
    "${TRAIN_ARGS[@]}" "$@"
mapfile -t FIRST < <(SEEDS=0 runs "${NAMES[@]}")
EVAL_SPLIT=validation EVAL_DOCS=$VAL_DOCS evaluate "${FIRST[@]}"
mapfile -t EVALS < <(EVAL_SPLIT=validation results "${FIRST[@]}")
python -m train.report "${EVALS[@]}" --against "conversion_vanilla vanilla" \
    --against "conversion_vanilla vanilla + dynamic-x4" --out "$ROOT/conversion-validation.md"

# 2. Seeds for the chosen recipe and the baseline.
for name in conversion_vanilla "$CHOSEN"; do train "$name" "$SEEDS" "$@"; done
RUNS=()
for name in "${NAMES[@]}"; do
    if [[ $name == conversion_vanilla || $name == "$CHOSEN" ]]; then
        mapfile -t -O "${#RUNS[@]}" RUNS < <(runs "$name")
    else
        RUNS+=("$ROOT/$name-seed0")
    fi
done

# 3. Every run on the test books, beside the parents.
evaluate "${PARENTS[@]}" "${RUNS[@]}"
mapfile -t EVALS < <(results "${PARENTS[@]}" "${RUNS[@]}")
python -m train.report "${EVALS[@]}" --against "conversion_vanilla vanilla" \
    --against "conversion_vanilla vanilla + dynamic-x4" --out "$ROOT/conversion.md"
in_window "${PARENTS[@]}" "${RUNS[@]}"
python -m train.report "${PARENTS[@]/%//eval/in-window/eval.json}" "${RUNS[@]/%//eval/in-window/eval.json}" \
    --against "conversion_vanilla vanilla" --out "$ROOT/conversion-in-window.md"
python -m train.plot "$ROOT/conversion.png" "${EVALS[@]}" --title "Experiment 2: converting a vanilla model at L=$L"

# 4. The budget.
BUDGET_RUNS=() AGAINST=() AGAINST_IN_WINDOW=()
for times in $BUDGETS; do
    steps=$((600 * times))
    for name in conversion_vanilla "$CHOSEN"; do
        train "$name" 0 "name=${name}_x$times" "trainer.max_steps=$steps" "trainer.save_every=$steps" "$@"
        BUDGET_RUNS+=("$ROOT/${name}_x$times-seed0")
    done
    AGAINST+=(--against "conversion_vanilla_x$times vanilla" --against "conversion_vanilla_x$times vanilla + dynamic-x4")
    AGAINST_IN_WINDOW+=(--against "conversion_vanilla_x$times vanilla")
done
if ((${#BUDGET_RUNS[@]})); then
    evaluate "${BUDGET_RUNS[@]}"
    mapfile -t EVALS < <(results "${BUDGET_RUNS[@]}")
    python -m train.report "${EVALS[@]}" "${AGAINST[@]}" --out "$ROOT/conversion-budget.md"
    in_window "${BUDGET_RUNS[@]}"
    python -m train.report "${BUDGET_RUNS[@]/%//eval/in-window/eval.json}" "${AGAINST_IN_WINDOW[@]}" \
        --out "$ROOT/conversion-budget-in-window.md"
fi
