"""The edge ring: entry points, Hydra, the run log, tracking, outputs, comparison and launch.

The only package that imports Hydra, OmegaConf, rich, W&B or Ray. Each command is a few lines
over the pipeline's plain functions:

- ``python -m thermojax.baseline`` (:mod:`thermojax.cli.baseline`): one run, or ``-m`` sweeps;
- ``python -m thermojax.compare`` (:mod:`thermojax.cli.compare`): a sweep's comparison page;
- ``python -m thermojax.launch`` (:mod:`thermojax.cli.launch`): a sweep as a Ray job on a cluster.
"""
