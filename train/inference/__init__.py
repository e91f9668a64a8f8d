"""Using a trained checkpoint: finding and loading its model, exporting it, generating text.

- load: a checkpoint path (run_dir, step-N folder or transformers folder) -> its model and tokenizer.
- export: `python -m train.export`'s work. generate: `python -m train.generate`'s.
- config: the export and generate commands' schemas and their checks.
"""
