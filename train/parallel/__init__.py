"""Long sequences: sharing one sequence over ranks (Ulysses), tiled compute, and the memory estimate.

- sequence_parallel: DeepSpeed's Ulysses (ALST) for trainer.sequence_parallel_size > 1.
- tiling: DeepSpeed's TiledMLP for trainer.tiled_mlp (train.trainer.loss tiles the logits).
- memory: the per-device estimate that refuses a run that clearly cannot fit.
"""
