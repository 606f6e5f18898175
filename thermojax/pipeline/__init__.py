"""The pipeline ring: numbers in, a typed :class:`~thermojax.pipeline.results.schema.Result` out.

It composes the core with a model: settings -> weights -> calibration -> time-group parameters ->
metrics -> sampling and quality -> a ``Result``. It reads and writes files (checkpoints, the stage
cache, the result JSON) but knows nothing of Hydra, OmegaConf, Jinja2, rich, W&B or Ray; the CLI
ring (``thermojax.cli``) drives it, and so can any script or test.

Example:
    >>> from thermojax.pipeline import BaselineConfig, run
    >>> result = run(BaselineConfig(bit_width=2, num_time_groups=4))  # doctest: +SKIP
    >>> result.smoothness_score, result.quality.frechet_quantized  # doctest: +SKIP
"""

from thermojax.pipeline.results.build import build_result
from thermojax.pipeline.results.schema import Result, read_result, write_result
from thermojax.pipeline.run.runner import STAGES, ProgressCallback, run, stage_names
from thermojax.pipeline.settings import BaselineConfig

__all__ = [
    "STAGES",
    "BaselineConfig",
    "ProgressCallback",
    "Result",
    "build_result",
    "read_result",
    "run",
    "stage_names",
    "write_result",
]
