"""The digits DDPM family: a residual-MLP DDPM on scikit-learn's 8x8 digits, its quality
classifier, its checkpoint format and its training script."""

from thermojax.models.digits.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint, save_checkpoint
from thermojax.models.digits.ddpm import DenoiserConfig, DigitsDDPM, NoiseSchedule

__all__ = [
    "SHIPPED_CHECKPOINT",
    "DenoiserConfig",
    "DigitsDDPM",
    "NoiseSchedule",
    "load_checkpoint",
    "save_checkpoint",
]
