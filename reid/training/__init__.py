"""Training and evaluation: datasets, samplers, losses, the training loop, metrics, re-ranking."""
