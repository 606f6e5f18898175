"""Weights: quantizing a runnable model's layers, streaming a checkpoint tensor by tensor, the rules that pick tensors, the per-tensor figures of the result."""
