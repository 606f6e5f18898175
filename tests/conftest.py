"""Shared test set-up: JAX on the CPU, strict about implicit rank promotion, and hypothesis
derandomized so that every run of the suite draws the same examples."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
from hypothesis import settings

jax.config.update("jax_numpy_rank_promotion", "raise")

# The same examples every run, no example database carried between runs: a failure reproduces
# from the test alone. HYPOTHESIS_PROFILE=explore draws fresh examples when hunting for bugs.
settings.register_profile("thermojax", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "thermojax"))
