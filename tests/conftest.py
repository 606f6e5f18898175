"""Shared test set-up: JAX on the CPU, strict about implicit rank promotion."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
