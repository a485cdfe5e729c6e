"""Training: launcher (world size, torchrun), recipe (setup/train/evaluate/save), metrics, artifacts."""
