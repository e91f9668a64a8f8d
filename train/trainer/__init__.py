"""The fine-tuning run behind `python -m train.finetune`: `loop.run` = validate -> `setup` -> `fit`.

- setup: config -> tokenizer, data, model, DeepSpeed engine, restored state, metrics (`Components`).
- loop: `run`, `fit` (the loop) and `save` (a checkpoint of the current step).
- steps: one optimizer step over its micro-batches, and validation.
- state: `TrainerState`, the trainer's part of a checkpoint (trainer_state.json).
- stop: stop requests by signal. build: the model a run trains. engine: DeepSpeed's config and engine.
- loss: the training loss (tiled, sequence-parallel). checkpoint: step folders under <run_dir>/checkpoints.
- metrics: metrics.jsonl and W&B. distributed: the process group and the ranks' joint decisions.
"""
