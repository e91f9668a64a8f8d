"""Evaluating a checkpoint as the paper does (`python -m train.evaluate`, `python -m train.plot`).

- config: the evaluate command's schema and its checks.
- run: the evaluation run: checkpoint -> model and documents -> perplexity, passkey -> files and W&B.
- documents: the test documents, whole books tokenized one by one.
- perplexity: sliding-window perplexity by window length.
- passkey: passkey retrieval prompts and accuracy.
- report: eval.json and eval.md. plot: eval.png and comparisons. wandb_log: results into the run's W&B run.
"""
