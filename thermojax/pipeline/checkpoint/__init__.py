"""Quantized checkpoints: the one writer and the reloader."""
