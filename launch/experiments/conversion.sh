#!/usr/bin/env bash
# Experiment 2, the paper's LLaMA conversion in miniature: the vanilla model of experiment 1
# (run launch/experiments/extrapolation.sh first) stands in for LLaMA. It is converted to slack
# CoCA and fine-tuned at L with one budget (1200 steps) in five ways:
#   (a) W_t from W_k, the paper's three stages (t_only, qkv, all)   conversion_kproj_stage{1,2,3}
#   (b) the same stages with W_t at random, as the reference code   conversion_random_stage{1,2,3}
#   (c) W_t from W_k, every weight from the start                   conversion_kproj_all
#   (d) the parent fine-tuned as vanilla: the baseline              conversion_vanilla
#   (e) as (a), stage 1 distilling the parent's attention           conversion_distill_stage{1,2,3}
# then evaluated like experiment 1. From the repository root:
#   launch/experiments/conversion.sh [training overrides...]
# Writes $ROOT/conversion_*/, $ROOT/conversion.md (the tables) and $ROOT/conversion.png.
# shellcheck source=launch/experiments/common.sh
. "$(dirname "$0")/common.sh"
PARENT=$ROOT/extrapolation_vanilla
[[ -d $PARENT/checkpoints ]] || { echo "no parent run at $PARENT: run launch/experiments/extrapolation.sh first" >&2; exit 2; }

# Everything that starts from the parent, as one sweep; then stages 2 and 3 of (a), (b) and (e).
python -m train.finetune -m \
    +experiment=conversion_kproj_stage1,conversion_random_stage1,conversion_distill_stage1,conversion_kproj_all,conversion_vanilla \
    "model.init_from=$PARENT" "${TRAIN_ARGS[@]}" "$@"
for stage in 2 3; do
    for init in kproj random distill; do
        python -m train.finetune "+experiment=conversion_${init}_stage$stage" \
            "model.init_from=$ROOT/conversion_${init}_stage$((stage - 1))" "${TRAIN_ARGS[@]}" "$@"
    done
done
RUNS=("$PARENT" "$ROOT/conversion_vanilla" "$ROOT/conversion_kproj_stage3" "$ROOT/conversion_random_stage3"
      "$ROOT/conversion_kproj_all" "$ROOT/conversion_distill_stage3")
evaluate "${RUNS[@]:1}"
mapfile -t EVALS < <(results "${RUNS[@]}")
python -m train.report "${EVALS[@]}" --against "extrapolation_vanilla vanilla" \
    --against "conversion_vanilla vanilla" --out "$ROOT/conversion.md"
python -m train.plot "$ROOT/conversion.png" "${EVALS[@]}" --title "Experiment 2: converting a vanilla model at L=$L"
