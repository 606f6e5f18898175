"""Train the shipped digits DDPM and its quality classifier, and write the checkpoint.

Usage::

    python -m thermojax.models.train_digits                 # writes ./digits_ddpm
    python -m thermojax.models.train_digits --ship          # rewrites the shipped checkpoint
    python -m thermojax.models.train_digits --steps 50 --out /tmp/ckpt   # smoke run

Seeded and deterministic on a given machine: the same flags give the same weights. Every argument
is checked before any work (one ``error:`` line, exit 2); the folder is published whole
(:func:`thermojax.files.atomic_folder`), its ``model.json`` strict JSON, and the package's own
checkpoint is written only with ``--ship``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from thermojax.errors import OneLineArgumentParser, UserInputError, command_boundary
from thermojax.files import atomic_folder, check_writable_folder
from thermojax.models.base import sample_quality
from thermojax.models.digits.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint, save_checkpoint
from thermojax.models.digits.classifier import ClassifierConfig, DigitsClassifier, load_real_digits
from thermojax.models.digits.ddpm import (
    Denoiser,
    DenoiserConfig,
    DigitsDDPM,
    NoiseSchedule,
    digits_to_model_space,
)

__all__ = [
    "DEFAULT_OUT",
    "MAX_BATCH",
    "MAX_EVAL_SAMPLES",
    "MAX_STEPS",
    "TrainConfig",
    "check_settings",
    "main",
    "train",
]

DEFAULT_OUT = Path("digits_ddpm")
"""Where the command writes without ``--out``: a new folder in the working directory, never the
package's shipped checkpoint (``--ship`` rewrites that one)."""


MAX_STEPS = 2**31 - 1
"""The most ``--steps`` / ``--classifier-steps``: optax's step count is int32."""
MAX_BATCH = 65_536
"""The most ``--batch-size``: one step holds the batch, its activations and their gradients
(36x the 1797 real digits it draws from)."""
MAX_EVAL_SAMPLES = 65_536
"""The most ``--eval-samples``: each keeps its trajectory ``[T, 64]`` float32 (256 KB at
T = 1000), so 65 536 take 17 GB."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training settings (written into the checkpoint's JSON)."""

    steps: int = 12_000
    batch_size: int = 256
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    steps_per_call: int = 200
    classifier_steps: int = 2_000
    classifier_noise: float = 0.15
    seed: int = 0
    num_timesteps: int = 1000


def _chunked_trainer(loss_fn, optimizer, steps_per_call: int, ema_decay: float | None):
    """A jitted function that runs ``steps_per_call`` optimizer steps in one ``lax.scan``."""

    def one_step(carry, key):
        params, opt_state, ema = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if ema_decay is not None:
            ema = optax.incremental_update(params, ema, step_size=1.0 - ema_decay)
        return (params, opt_state, ema), loss

    @jax.jit
    def run(carry, key):
        keys = jax.random.split(key, steps_per_call)
        carry, losses = jax.lax.scan(one_step, carry, keys)
        return carry, jnp.mean(losses)

    return run


def _schedule(cfg: TrainConfig, total: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, max(total // 10, 1))
    return optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, warmup, max(total, warmup + 1), end_value=cfg.learning_rate * 0.02
    )


def train_denoiser(
    cfg: TrainConfig, arch: DenoiserConfig, schedule: NoiseSchedule, data: np.ndarray, log=print
) -> tuple[dict[str, Any], float]:
    """Epsilon-prediction DDPM training; returns ``(EMA params, final mean loss)``."""
    module = Denoiser(arch)
    key = jax.random.PRNGKey(cfg.seed)
    init_key, train_key = jax.random.split(key)
    x_data = jnp.asarray(data)
    sqrt_ab = jnp.asarray(np.sqrt(schedule.alpha_bar))
    sqrt_1mab = jnp.asarray(np.sqrt(1.0 - schedule.alpha_bar))
    params = module.init(init_key, x_data[:2], jnp.zeros((2,), jnp.int32))["params"]

    def loss_fn(p, k):
        k_idx, k_t, k_eps = jax.random.split(k, 3)
        idx = jax.random.randint(k_idx, (cfg.batch_size,), 0, x_data.shape[0])
        t = jax.random.randint(k_t, (cfg.batch_size,), 0, schedule.num_timesteps)
        x0 = x_data[idx]
        eps = jax.random.normal(k_eps, x0.shape)
        x_t = sqrt_ab[t][:, None] * x0 + sqrt_1mab[t][:, None] * eps
        eps_hat, _ = module.apply({"params": p}, x_t, t)
        return jnp.mean((eps_hat - eps) ** 2)

    calls = max(1, -(-cfg.steps // cfg.steps_per_call))
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(_schedule(cfg, cfg.steps)))
    run = _chunked_trainer(loss_fn, optimizer, min(cfg.steps_per_call, cfg.steps), cfg.ema_decay)
    carry = (params, optimizer.init(params), params)
    loss = float("nan")
    for call in range(calls):
        carry, mean_loss = run(carry, jax.random.fold_in(train_key, call))
        loss = float(mean_loss)
        if call % 10 == 0 or call == calls - 1:
            log(
                f"denoiser step {(call + 1) * min(cfg.steps_per_call, cfg.steps):>6}: loss {loss:.4f}"
            )
    return jax.device_get(carry[2]), loss


def train_classifier(
    cfg: TrainConfig, arch: ClassifierConfig, log=print
) -> tuple[dict[str, Any], float]:
    """Train the quality classifier on 80% of the real digits; returns ``(params, test acc)``."""
    pixels, labels = load_real_digits()
    x_all = digits_to_model_space(pixels)
    order = np.random.default_rng(cfg.seed).permutation(len(x_all))
    split = int(0.8 * len(order))
    train_idx, test_idx = order[:split], order[split:]
    x_train, y_train = jnp.asarray(x_all[train_idx]), jnp.asarray(labels[train_idx])
    module = DigitsClassifier(arch)
    key = jax.random.PRNGKey(cfg.seed + 1)
    init_key, train_key = jax.random.split(key)
    params = module.init(init_key, x_train[:2])["params"]

    def loss_fn(p, k):
        k_idx, k_noise = jax.random.split(k)
        idx = jax.random.randint(k_idx, (128,), 0, x_train.shape[0])
        # Noise augmentation: generated digits are continuous and slightly noisy, real ones are not.
        x = x_train[idx] + cfg.classifier_noise * jax.random.normal(k_noise, (128, 64))
        logits, _ = module.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y_train[idx]).mean()

    steps = max(cfg.classifier_steps, 1)
    per_call = min(cfg.steps_per_call, steps)
    optimizer = optax.adamw(_schedule(cfg, steps), weight_decay=1e-4)
    run = _chunked_trainer(loss_fn, optimizer, per_call, None)
    carry = (params, optimizer.init(params), None)
    for call in range(max(1, -(-steps // per_call))):
        carry, _ = run(carry, jax.random.fold_in(train_key, call))
    params = jax.device_get(carry[0])
    logits, _ = module.apply({"params": params}, jnp.asarray(x_all[test_idx]))
    accuracy = float(np.mean(np.argmax(np.asarray(logits), axis=1) == labels[test_idx]))
    log(f"classifier held-out accuracy: {accuracy:.3f} ({len(test_idx)} digits)")
    return params, accuracy


@functools.partial(jax.jit, static_argnames="num_samples")
def _sample_fp32(
    model: DigitsDDPM, key: jax.Array, *, num_samples: int
) -> tuple[jax.Array, jax.Array]:
    """fp32 ancestral sampling, the model (its parameters) an argument of the program."""
    return model.sample(key=key, num_samples=num_samples)


def check_settings(
    out: str | os.PathLike[str],
    cfg: TrainConfig,
    *,
    eval_samples: int = 256,
    force: bool = False,
    ship: bool = False,
) -> None:
    """Every setting and the output folder, checked before any work.

    Raises:
        UserInputError: the first bad value, named with the flag a user gave.
    """
    for flag, value, low, high, why in (
        ("--steps", cfg.steps, 1, MAX_STEPS, "optax counts steps in int32"),
        ("--batch-size", cfg.batch_size, 1, MAX_BATCH, "a step holds the whole batch"),
        ("--classifier-steps", cfg.classifier_steps, 1, MAX_STEPS, "optax counts in int32"),
        ("--eval-samples", eval_samples, 0, MAX_EVAL_SAMPLES, "each holds its trajectory"),
        ("--seed", cfg.seed, 0, 2**32 - 2, "the classifier takes seed + 1: a 32-bit PRNG key"),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserInputError(f"{flag} {value!r}: must be an integer >= {low}")
        if value > high:
            raise UserInputError(f"{flag} {value}: must be at most {high} ({why})")
    if eval_samples == 1:
        raise UserInputError(
            "--eval-samples 1: the quality check's Frechet distance needs at least 2 samples "
            "(0 skips it)"
        )
    for name, value in (("learning_rate", cfg.learning_rate), ("ema_decay", cfg.ema_decay)):
        if not (math.isfinite(value) and 0.0 < value < 1.0):
            raise UserInputError(f"{name}={value!r}: must be in (0, 1)")
    if "\0" in os.fspath(out):
        raise UserInputError(f"--out {os.fspath(out)!r}: a path cannot hold a NUL character")
    out = Path(out)
    shipped = out.resolve() == SHIPPED_CHECKPOINT.resolve()
    if shipped and not ship:
        raise UserInputError(f"--out {out} is the shipped checkpoint: pass --ship to rewrite it")
    if ship and not shipped:
        raise UserInputError(f"--ship writes only the shipped folder {SHIPPED_CHECKPOINT}")
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (force or ship):
        raise UserInputError(
            f"--out {out}: is not empty; choose a new folder or pass --force to replace it"
        )
    check_writable_folder(out.parent if out.parent != out else out, what="--out", create=False)


def train(
    out: str | Path,
    cfg: TrainConfig | None = None,
    arch: DenoiserConfig | None = None,
    classifier_arch: ClassifierConfig | None = None,
    *,
    eval_samples: int = 256,
    log=print,
) -> dict[str, Any]:
    """Train both networks, measure sample quality, write the checkpoint to ``out``.

    The folder is published whole (an existing one replaced) once everything is measured; a
    training that diverged (a non-finite loss or quality figure) writes nothing.

    Returns the metadata written to ``model.json`` (training settings, timings, quality).

    Raises:
        UserInputError: the loss or a quality figure is not finite (strict JSON has no NaN).
    """
    cfg = cfg or TrainConfig()
    arch = arch or DenoiserConfig()
    classifier_arch = classifier_arch or ClassifierConfig()
    start = time.perf_counter()
    schedule_config = {"num_timesteps": cfg.num_timesteps, "beta_start": 1e-4, "beta_end": 0.02}
    schedule = NoiseSchedule.linear(**schedule_config)
    data = digits_to_model_space(load_real_digits()[0])
    classifier_params, accuracy = train_classifier(cfg, classifier_arch, log=log)
    params, loss = train_denoiser(cfg, arch, schedule, data, log=log)
    train_seconds = time.perf_counter() - start
    metadata = {
        "training": {
            **dataclasses.asdict(cfg),
            "final_loss": loss,
            "seconds": round(train_seconds, 1),
            "classifier_test_accuracy": accuracy,
            "command": "python -m thermojax.models.train_digits",
        }
    }
    if not math.isfinite(loss):
        raise UserInputError(
            f"training diverged: the final denoiser loss is {loss} (settings {cfg}); "
            "nothing written"
        )
    with atomic_folder(out, replace=True) as folder:
        save = functools.partial(
            save_checkpoint,
            folder,
            denoiser_config=arch,
            schedule_config=schedule_config,
            denoiser_params=params,
            classifier_config=classifier_arch,
            classifier_params=classifier_params,
        )
        save(metadata=metadata)
        if eval_samples > 0:
            model = load_checkpoint(folder)
            x0, _ = _sample_fp32(model, jax.random.PRNGKey(0), num_samples=eval_samples)
            quality = sample_quality(model, model.to_pixels(x0))
            bad = [k for k, v in quality.items() if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                raise UserInputError(
                    f"the trained model's samples give non-finite {', '.join(bad)}; nothing written"
                )
            metadata["quality"] = {"num_samples": eval_samples, **quality}
            log(f"fp32 sample quality ({eval_samples} samples): {quality}")
            save(metadata=metadata)  # again, now with the measured quality in model.json
    log(f"wrote {out} in {time.perf_counter() - start:.0f} s (training {train_seconds:.0f} s)")
    return metadata


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: a bad argument, a folder that takes no files, a diverged
    training or a full disk ends in one ``error:`` line (exit 2), Ctrl-C in one line (130)."""
    command_boundary(lambda: _main(argv), name="thermojax.models.train_digits")


def _main(argv: Sequence[str] | None) -> None:
    defaults = TrainConfig()
    parser = OneLineArgumentParser(
        prog="python -m thermojax.models.train_digits", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--out", type=Path, default=None, help=f"a new folder to write (default: ./{DEFAULT_OUT})"
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")
    parser.add_argument(
        "--ship", action="store_true", help=f"rewrite the package's shipped {SHIPPED_CHECKPOINT}"
    )
    parser.add_argument("--steps", type=int, default=defaults.steps, help="denoiser Adam steps")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--classifier-steps", type=int, default=defaults.classifier_steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--eval-samples", type=int, default=256, help="samples for the quality check (0: skip)"
    )
    args = parser.parse_args(argv)
    if args.ship and args.out is not None:
        parser.error("--ship and --out are exclusive (--ship writes the shipped folder)")
    out = SHIPPED_CHECKPOINT if args.ship else (args.out or DEFAULT_OUT)
    cfg = dataclasses.replace(
        defaults,
        steps=args.steps,
        batch_size=args.batch_size,
        classifier_steps=args.classifier_steps,
        seed=args.seed,
    )
    check_settings(out, cfg, eval_samples=args.eval_samples, force=args.force, ship=args.ship)
    train(out, cfg, eval_samples=args.eval_samples)


if __name__ == "__main__":
    main()
