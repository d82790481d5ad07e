"""The nanotron backend: checkpoints written by nanotron, loaded with data, tensor and pipeline parallelism."""
