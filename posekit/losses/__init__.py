"""Training losses shared by the model families."""
