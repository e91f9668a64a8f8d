"""Checkpoints under <run_dir>/checkpoints/step-NNNNNNNN/: DeepSpeed's shards plus the trainer's own files.

A save is complete or it does not count: every rank writes its shards and RNG state, then rank 0
writes `manifest.json` (every file and its size), `trainer_state.json` (the completion mark) and
atomically repoints `latest`. One module a job:
- folders: where checkpoints are, which are complete, `latest`, setting folders aside, pruning.
- manifest: the files a save wrote, checked before a resume trusts them.
- identity: what a checkpoint's weights mean (variant, tokenizer, seq_len, data), checked on resume.
- save / load: writing and reading one, with the engine; a full disk stops the run cleanly.
- resume: which checkpoint a run continues from (damaged ones and abandoned branches set aside).
- rng: every rank's random-number state. universal: DeepSpeed's universal form, for a resume at
  another world size.
"""
