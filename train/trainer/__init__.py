"""The fine-tuning run behind `python -m train.finetune`: `loop.run` = validate -> `setup` -> `fit`.

- setup: config -> tokenizer, data, model, DeepSpeed engine, restored state, metrics (`Components`).
- loop: `run`, `fit` (the loop) and `save` (a checkpoint of the current step).
- steps: one optimizer step over its micro-batches, and validation. divergence: which skipped
  steps count as divergence.
- state: `TrainerState`, the trainer's part of a checkpoint (trainer_state.json).
- stop: stop requests by signal. run_dir_lock: one run per run_dir.
- build: the model a run trains. engine: DeepSpeed's config and engine.
- loss: the training loss (tiled, sequence-parallel).
- checkpoint/: step folders under <run_dir>/checkpoints (see its __init__).
- metrics: metrics.jsonl and W&B. distributed: the process group and the ranks' joint decisions.
"""
