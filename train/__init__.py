"""CoCA long-context fine-tuning: attention, model loading and the trainer."""
