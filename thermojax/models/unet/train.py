"""Train the shipped digits UNet: a small diffusers ``UNet2DModel`` on scikit-learn's 8x8 digits.

Usage::

    python -m thermojax.models.unet.train                  # writes ./digits_unet
    python -m thermojax.models.unet.train --ship           # rewrites the shipped folder
    python -m thermojax.models.unet.train --steps 20 --out /tmp/unet --eval-samples 0  # smoke run

The folder is a diffusers model folder (``config.json``, ``diffusion_pytorch_model.safetensors``,
``scheduler/scheduler_config.json``) that diffusers' ``UNet2DModel.from_pretrained`` reads, plus
``thermojax.json``: the training record, the measured fp32 quality, and ``"reference": "digits"``
(its samples are graded by the digits DDPM's classifier). Epsilon-prediction DDPM training
(linear betas 1e-4 .. 0.02, T = 1000), Adam with warmup and cosine decay, EMA weights; seeded
and deterministic on a given machine. The folder is published whole
(:func:`thermojax.files.atomic_folder`); every argument is checked before any work.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from thermojax.errors import OneLineArgumentParser, UserInputError, command_boundary
from thermojax.files import atomic_folder, atomic_write_text
from thermojax.models.base import SamplerSpec
from thermojax.models.digits.classifier import load_real_digits
from thermojax.models.digits.ddpm import digits_to_model_space
from thermojax.models.digits.train import check_settings as _check_digits_settings
from thermojax.models.hf.writer import write_safetensors
from thermojax.models.unet.config import UNet2DConfig
from thermojax.models.unet.diffusion import THERMOJAX_FILE, load_unet_diffusion
from thermojax.models.unet.loading import CONFIG_FILE, SCHEDULER_FILE, WEIGHTS_FILE
from thermojax.models.unet.network import apply
from thermojax.models.unet.scheduler import SchedulerConfig, alphas_cumprod

__all__ = [
    "DEFAULT_OUT",
    "DIGITS_UNET_CONFIG",
    "DIGITS_UNET_SCHEDULER",
    "SHIPPED_UNET",
    "THERMOJAX_FILE",
    "UNetTrainConfig",
    "init_params",
    "main",
    "measure_quality",
    "train",
]

SHIPPED_UNET = Path(__file__).resolve().parents[1] / "checkpoints" / "digits_unet"
"""The digits UNet shipped inside thermojax (``model=digits-unet``)."""
DEFAULT_OUT = Path("digits_unet")

EVAL_SAMPLER = SamplerSpec("ddim", steps=50)
"""The sampler of the quality check (:func:`measure_quality`)."""

DIGITS_UNET_CONFIG: dict[str, Any] = {
    "_class_name": "UNet2DModel",
    "_diffusers_version": "0.42.0",
    "act_fn": "silu",
    "add_attention": True,
    "attention_head_dim": 16,
    "attn_norm_num_groups": None,
    "block_out_channels": [32, 64],
    "center_input_sample": False,
    "class_embed_type": None,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "downsample_padding": 1,
    "downsample_type": "conv",
    "dropout": 0.0,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 1,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2D",
    "norm_eps": 1e-05,
    "norm_num_groups": 8,
    "num_class_embeds": None,
    "num_train_timesteps": None,
    "out_channels": 1,
    "resnet_time_scale_shift": "default",
    "sample_size": 8,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "upsample_type": "conv",
}
DIGITS_UNET_SCHEDULER: dict[str, Any] = {
    "_class_name": "DDPMScheduler",
    "_diffusers_version": "0.42.0",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "trained_betas": None,
    "variance_type": "fixed_small",
}


@dataclasses.dataclass(frozen=True)
class UNetTrainConfig:
    """Training settings (written into ``thermojax.json``)."""

    steps: int = 600
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    ema_decay: float = 0.99
    steps_per_call: int = 50
    seed: int = 0


def init_params(config: UNet2DConfig, seed: int) -> dict[str, np.ndarray]:
    """Seeded float32 initial tensors: weights ``z / sqrt(fan_in)``, norm scales 1, biases 0,
    ``conv_out`` zero (the network starts by predicting no noise)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in config.tensor_shapes().items():
        if name.endswith(".bias") or name.startswith("conv_out."):
            value = np.zeros(shape, np.float32)
        elif "norm" in name:
            value = np.ones(shape, np.float32)
        else:
            value = rng.standard_normal(shape, np.float32) / np.float32(np.sqrt(np.prod(shape[1:])))
        params[name] = value
    return params


def _trainer(config: UNet2DConfig, cfg: UNetTrainConfig, data: jax.Array, cumprod: np.ndarray):
    sqrt_ab = jnp.asarray(np.sqrt(cumprod), jnp.float32)
    sqrt_1mab = jnp.asarray(np.sqrt(1.0 - cumprod), jnp.float32)
    total = len(cumprod)

    def loss_fn(params, key):
        k_idx, k_t, k_eps = jax.random.split(key, 3)
        idx = jax.random.randint(k_idx, (cfg.batch_size,), 0, data.shape[0])
        t = jax.random.randint(k_t, (cfg.batch_size,), 0, total)
        x0 = data[idx]
        eps = jax.random.normal(k_eps, x0.shape)
        x_t = sqrt_ab[t][:, None, None, None] * x0 + sqrt_1mab[t][:, None, None, None] * eps
        return jnp.mean((apply(params, config, x_t, t) - eps) ** 2)

    warmup = min(cfg.warmup_steps, max(cfg.steps // 10, 1))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, warmup, max(cfg.steps, warmup + 1), cfg.learning_rate * 0.02
    )
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    chunk = min(cfg.steps_per_call, cfg.steps)

    def one_step(carry, key):
        params, opt_state, ema = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ema = optax.incremental_update(params, ema, step_size=1.0 - cfg.ema_decay)
        return (params, opt_state, ema), loss

    @jax.jit
    def run(carry, key):
        carry, losses = jax.lax.scan(one_step, carry, jax.random.split(key, chunk))
        return carry, jnp.mean(losses)

    return optimizer, run, chunk


def train_unet(
    cfg: UNetTrainConfig, config: UNet2DConfig, scheduler: SchedulerConfig, log=print
) -> tuple[dict[str, np.ndarray], float]:
    """Epsilon-prediction training on the digits; returns ``(EMA params, last chunk's loss)``."""
    pixels = load_real_digits()[0]
    data = jnp.asarray(digits_to_model_space(pixels).reshape(-1, 1, 8, 8))
    params = {k: jnp.asarray(v) for k, v in init_params(config, cfg.seed).items()}
    optimizer, run, chunk = _trainer(config, cfg, data, alphas_cumprod(scheduler))
    carry = (params, optimizer.init(params), params)
    key = jax.random.PRNGKey(cfg.seed)
    calls = -(-cfg.steps // chunk)
    loss = math.nan
    for call in range(calls):
        carry, mean_loss = run(carry, jax.random.fold_in(key, call))
        loss = float(mean_loss)
        if call % 10 == 0 or call == calls - 1:
            log(f"unet step {(call + 1) * chunk:>6}: loss {loss:.4f}")
    return {k: np.asarray(v, np.float32) for k, v in jax.device_get(carry[2]).items()}, loss


def write_folder(
    folder: Path,
    config: dict[str, Any],
    scheduler: dict[str, Any],
    params: dict[str, np.ndarray],
    record: dict[str, Any],
) -> None:
    """A diffusers model folder with its scheduler, and ``thermojax.json``."""
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    write_safetensors(
        folder / WEIGHTS_FILE,
        [(name, "F32", tuple(value.shape)) for name, value in params.items()],
        params.__getitem__,
        metadata={"format": "pt"},
    )
    for path, content in (
        (folder / CONFIG_FILE, config),
        (folder / "scheduler" / SCHEDULER_FILE, scheduler),
        (folder / THERMOJAX_FILE, record),
    ):
        atomic_write_text(path, json.dumps(content, indent=2, sort_keys=True) + "\n")


def train(
    out: str | Path, cfg: UNetTrainConfig | None = None, *, eval_samples: int = 256, log=print
) -> dict[str, Any]:
    """Train, write the folder to ``out`` (replaced whole), measure fp32 quality of
    ``eval_samples`` samples against the digits reference (:func:`measure_quality`); returns
    ``thermojax.json``.

    Raises:
        UserInputError: the loss or a quality figure is not finite (nothing written).
    """
    cfg = cfg or UNetTrainConfig()
    config = UNet2DConfig.from_dict(DIGITS_UNET_CONFIG)
    scheduler = SchedulerConfig.from_dict(DIGITS_UNET_SCHEDULER)
    start = time.perf_counter()
    params, loss = train_unet(cfg, config, scheduler, log=log)
    seconds = time.perf_counter() - start
    if not math.isfinite(loss):
        raise UserInputError(f"training diverged: the final loss is {loss}; nothing written")
    record: dict[str, Any] = {
        "reference": "digits",
        "training": {
            **dataclasses.asdict(cfg),
            "final_loss": loss,
            "seconds": round(seconds, 1),
            "parameters": config.num_parameters(),
            "command": "python -m thermojax.models.unet.train",
        },
    }
    with atomic_folder(out, replace=True) as folder:
        write_folder(folder, DIGITS_UNET_CONFIG, DIGITS_UNET_SCHEDULER, params, record)
        if eval_samples > 0:
            record = measure_quality(folder, eval_samples, log=log)
    log(f"wrote {out} in {time.perf_counter() - start:.0f} s (training {seconds:.0f} s)")
    return record


def measure_quality(
    folder: str | Path, eval_samples: int = 256, *, seed: int = 0, log=print
) -> dict[str, Any]:
    """Sample ``eval_samples`` images from the folder's model with :data:`EVAL_SAMPLER` (DDIM,
    50 steps: the ancestral sampler's 1000 steps take 20x longer on a CPU), grade them against
    its reference, and record the figures in its ``thermojax.json`` (``quality``); returns the
    record.

    Raises:
        UserInputError: a non-finite figure (nothing recorded).
    """
    from thermojax.models.base import sample_quality

    folder = Path(folder)
    model = load_unet_diffusion(folder)
    x0, _ = jax.jit(model.sample, static_argnames=("num_samples", "sampler"))(
        key=jax.random.PRNGKey(seed), num_samples=eval_samples, sampler=EVAL_SAMPLER
    )
    quality = sample_quality(model, model.to_pixels(x0))
    bad = [k for k, v in quality.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise UserInputError(f"samples give non-finite {', '.join(bad)}; nothing recorded")
    record = json.loads((folder / THERMOJAX_FILE).read_text("utf-8"))
    sampler = EVAL_SAMPLER.describe(model.num_timesteps)
    record["quality"] = {"num_samples": eval_samples, "sampler": sampler, "seed": seed, **quality}
    atomic_write_text(folder / THERMOJAX_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")
    log(f"fp32 sample quality ({eval_samples} samples, {sampler}): {quality}")
    return record


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (a bad argument: one ``error:`` line, exit 2)."""
    command_boundary(lambda: _main(argv), name="thermojax.models.unet.train")


def _main(argv: Sequence[str] | None) -> None:
    defaults = UNetTrainConfig()
    parser = OneLineArgumentParser(
        prog="python -m thermojax.models.unet.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=None, help=f"default ./{DEFAULT_OUT}")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--ship", action="store_true", help=f"rewrite {SHIPPED_UNET}")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--eval-samples", type=int, default=256)
    args = parser.parse_args(argv)
    if args.ship and args.out is not None:
        parser.error("--ship and --out are exclusive (--ship writes the shipped folder)")
    out = SHIPPED_UNET if args.ship else (args.out or DEFAULT_OUT)
    cfg = dataclasses.replace(
        defaults, steps=args.steps, batch_size=args.batch_size, seed=args.seed
    )
    _check_settings(out, cfg, eval_samples=args.eval_samples, force=args.force, ship=args.ship)
    train(out, cfg, eval_samples=args.eval_samples)


def _check_settings(
    out: Path, cfg: UNetTrainConfig, *, eval_samples: int, force: bool, ship: bool
) -> None:
    if ship and Path(out).resolve() != SHIPPED_UNET.resolve():
        raise UserInputError(f"--ship writes only the shipped folder {SHIPPED_UNET}")
    if Path(out).resolve() == SHIPPED_UNET.resolve() and not ship:
        raise UserInputError(f"--out {out} is the shipped folder: pass --ship to rewrite it")
    from thermojax.models.digits.train import TrainConfig

    # The digits trainer's checks cover the same flags (ranges, the output folder).
    digits = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, seed=cfg.seed)
    _check_digits_settings(out, digits, eval_samples=eval_samples, force=force or ship)


if __name__ == "__main__":
    main()
