"""Synthetic datasets with exactly known ground truth, for tests, demos and smoke training."""
