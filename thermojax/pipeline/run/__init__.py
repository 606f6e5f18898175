"""A run and its stages: the baseline run, the phase experiment, the variants it composes, the weight-only checkpoint run."""
