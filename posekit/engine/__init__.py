"""Training and inference engine: the one trainer, checkpoints, distributed set-up, predictor."""
