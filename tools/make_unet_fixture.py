"""Write ``tests/fixtures/unet_tiny/``: tiny random diffusers ``UNet2DModel`` checkpoints, their
outputs, DDIM trajectories and noise schedules computed by diffusers itself.

The reference ``thermojax.models.unet`` is checked against. Needs torch and diffusers, which
thermojax does not depend on; install them in a side virtual environment and run this file
with it (from the repository root)::

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 diffusers==0.42.0 safetensors numpy
    /tmp/torchvenv/bin/python tools/make_unet_fixture.py [--out tests/fixtures/unet_tiny]

What it writes (about 0.6 MB, the same bytes on every run with the same versions):

- ``unet/`` (``config.json``, ``diffusion_pytorch_model.safetensors``) and
  ``scheduler/scheduler_config.json``: a pipeline folder. The UNet has CIFAR-DDPM's options at
  toy width (``block_out_channels`` (16, 32), one resnet per block, ``DownBlock2D`` /
  ``AttnDownBlock2D``, attention heads of 8, ``flip_sin_to_cos`` false, ``freq_shift`` 1,
  ``downsample_padding`` 0, ``norm_eps`` 1e-6, 4 groups); the scheduler is a DDIM one with
  ``set_alpha_to_one`` false and ``steps_offset`` 1;
- ``variant/`` and ``plain/``: two more model folders exercising the other options: one input
  and two output channels, three levels, one head of the block's width (``attention_head_dim``
  null), ``center_input_sample``, ``mid_block_scale_factor`` 2, ``attn_norm_num_groups``,
  ``time_embedding_dim``, ``act_fn`` "swish", ``downsample_padding`` 1 (``variant``); no mid
  attention and an odd time-embedding width (``plain``);
- ``reference.npz``: per model, ``<name>_samples`` ``[B, C, H, W]``, ``<name>_timesteps``
  ``[K]``, ``<name>_outputs`` ``[K, B, C_out, H, W]`` (the whole batch at each timestep) and
  ``<name>_mixed_timesteps`` / ``<name>_mixed`` (a different timestep per sample); the DDIM
  trajectories ``ddim_<kind>`` ``[steps + 1, 2, 3, 16, 16]`` of ``unet`` from ``ddim_noise``,
  computed with ``DDIMScheduler.step`` (eta 0) in diffusers' own loop; schedules
  ``betas_<schedule>`` / ``alphas_cumprod_<schedule>`` (diffusers' float32);
- ``reference.json``: the DDIM runs' scheduler configs and step counts, the timesteps of
  ``set_timesteps`` for every spacing / step count / offset, and the parameter count of
  ``google/ddpm-cifar10-32``'s architecture as diffusers builds it;
- ``README.md``.

Weights are random (a seeded numpy generator) at scales that make every part matter: unit-
variance outputs per conv / linear layer, norm weights ``1 + 0.1 z``, biases ``0.1 z``; stored
in bfloat16 (half the bytes), the references computed in float32 from the same bf16 values.
The script checks that the timestep changes the output, so the time path is exercised.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import diffusers
import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

SEED = 20261208
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "unet_tiny"

MODELS = {
    "unet": {
        "sample_size": 16,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (16, 32),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 4,
        "attention_head_dim": 8,
        "flip_sin_to_cos": False,
        "freq_shift": 1,
        "downsample_padding": 0,
        "norm_eps": 1e-6,
    },
    "variant": {
        "sample_size": 8,
        "in_channels": 1,
        "out_channels": 2,
        "block_out_channels": (8, 16, 16),
        "layers_per_block": 2,
        "down_block_types": ("AttnDownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D"),
        "norm_num_groups": 4,
        "attention_head_dim": None,
        "center_input_sample": True,
        "mid_block_scale_factor": 2.0,
        "attn_norm_num_groups": 2,
        "time_embedding_dim": 24,
        "act_fn": "swish",
        "downsample_padding": 1,
    },
    "plain": {
        "sample_size": 8,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (9, 12),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D"),
        "norm_num_groups": 3,
        "add_attention": False,
    },
}
FOLDERS = {"unet": "unet", "variant": "variant", "plain": "plain"}
TIMESTEPS = (0, 1, 10, 500, 999)
BATCH = 3

# DDIM runs on `unet`: (beta_schedule, spacing, prediction, clip, steps, extra config)
DDIM_RUNS = {
    "epsilon": {
        "steps": 5,
        "scheduler": {
            "beta_schedule": "linear",
            "timestep_spacing": "leading",
            "prediction_type": "epsilon",
            "clip_sample": True,
            "set_alpha_to_one": False,
            "steps_offset": 1,
        },
    },
    "v_prediction": {
        "steps": 4,
        "scheduler": {
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "timestep_spacing": "trailing",
            "prediction_type": "v_prediction",
            "clip_sample": False,
        },
    },
    "sample": {
        "steps": 6,
        "scheduler": {
            "beta_schedule": "squaredcos_cap_v2",
            "timestep_spacing": "linspace",
            "prediction_type": "sample",
            "clip_sample": True,
            "clip_sample_range": 1.5,
        },
    },
}
SCHEDULES = {
    "linear": {"beta_schedule": "linear"},
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2"},
}
STEP_COUNTS = (1, 3, 7, 10, 50, 999)
CIFAR10 = {
    "sample_size": 32,
    "block_out_channels": (128, 256, 256, 256),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": None,
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
}


def randomize(model: torch.nn.Module, rng: np.random.Generator) -> None:
    """bf16-rounded random values for every parameter (see the module docstring)."""
    state = {}
    for name, tensor in model.state_dict().items():
        shape = tuple(tensor.shape)
        if "norm" in name and name.endswith(".weight"):
            values = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            values = 0.1 * rng.standard_normal(shape)
        else:  # conv [out, in, kh, kw] or linear [out, in]
            values = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        state[name] = torch.tensor(values, dtype=torch.float32).to(torch.bfloat16).float()
    model.load_state_dict(state, strict=True)


def run(model: UNet2DModel, sample: np.ndarray, timesteps: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.tensor(sample), torch.tensor(timesteps, dtype=torch.long)).sample
    return out.numpy().astype(np.float32)


def ddim_trajectory(
    model: UNet2DModel, noise: np.ndarray, scheduler: DDIMScheduler, steps: int
) -> np.ndarray:
    scheduler.set_timesteps(steps)
    x = torch.tensor(noise)
    path = [x.numpy().copy()]
    with torch.no_grad():
        for t in scheduler.timesteps:
            output = model(x, t).sample
            x = scheduler.step(output, t, x, eta=0.0).prev_sample
            path.append(x.numpy().copy())
    return np.stack(path).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    reference: dict[str, object] = {
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        "seed": SEED,
    }

    models = {}
    for name, config in MODELS.items():
        model = UNet2DModel(**config).float().eval()
        randomize(model, rng)
        models[name] = model
        size, channels = config["sample_size"], config["in_channels"]
        sample = rng.standard_normal((BATCH, channels, size, size)).astype(np.float32)
        timesteps = np.array(TIMESTEPS, np.int64)
        outputs = np.stack([run(model, sample, np.full(BATCH, t)) for t in timesteps])
        mixed_t = rng.integers(0, 1000, size=BATCH).astype(np.int64)
        spread = np.abs(outputs[0] - outputs[-1]).max() / np.abs(outputs).max()
        if spread < 1e-2:
            raise SystemExit(f"{name}: the timestep barely changes the output ({spread:.2e})")
        arrays |= {
            f"{name}_samples": sample,
            f"{name}_timesteps": timesteps,
            f"{name}_outputs": outputs,
            f"{name}_mixed_timesteps": mixed_t,
            f"{name}_mixed": run(model, sample, mixed_t),
        }
        folder = out / FOLDERS[name]
        model.to(torch.bfloat16).save_pretrained(folder)
        model.float()
        print(
            f"{name}: {sum(p.numel() for p in model.parameters())} parameters, max |out| "
            f"{np.abs(outputs).max():.3f}, timestep spread {spread:.3f}"
        )

    noise = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    arrays["ddim_noise"] = noise
    runs = {}
    for kind, spec in DDIM_RUNS.items():
        scheduler = DDIMScheduler(**spec["scheduler"])
        arrays[f"ddim_{kind}"] = ddim_trajectory(models["unet"], noise, scheduler, spec["steps"])
        # without diffusers' private keys (_use_default_values: a set, in no stable order)
        public = {k: v for k, v in scheduler.config.items() if not k.startswith("_")}
        runs[kind] = {
            "steps": spec["steps"],
            "scheduler": {"_class_name": "DDIMScheduler", **public},
        }
        if kind == "epsilon":
            scheduler.save_config(out / "scheduler")
    reference["ddim"] = json.loads(json.dumps(runs, default=list))

    for name, spec in SCHEDULES.items():
        ddim, ddpm = DDIMScheduler(**spec), DDPMScheduler(**spec)
        if not torch.equal(ddim.alphas_cumprod, ddpm.alphas_cumprod):
            raise SystemExit(f"{name}: DDPM and DDIM schedules differ")
        arrays[f"betas_{name}"] = ddim.betas.numpy()
        arrays[f"alphas_cumprod_{name}"] = ddim.alphas_cumprod.numpy()

    timesteps = []
    for train in (1000, 37):
        for spacing in ("leading", "trailing", "linspace"):
            for offset in (0, 1) if spacing == "leading" else (0,):
                for steps in STEP_COUNTS:
                    if steps > train:
                        continue
                    config = {
                        "num_train_timesteps": train,
                        "timestep_spacing": spacing,
                        "steps_offset": offset,
                    }
                    ddim, ddpm = DDIMScheduler(**config), DDPMScheduler(**config)
                    ddim.set_timesteps(steps)
                    ddpm.set_timesteps(steps)
                    if not torch.equal(ddim.timesteps, ddpm.timesteps):
                        raise SystemExit(f"{config} {steps}: DDPM and DDIM timesteps differ")
                    timesteps.append(
                        {"config": config, "steps": steps, "timesteps": ddim.timesteps.tolist()}
                    )
    reference["timesteps"] = timesteps

    cifar = UNet2DModel(**CIFAR10)
    reference["ddpm_cifar10_32"] = {
        "parameters": sum(p.numel() for p in cifar.parameters()),
        "tensors": len(cifar.state_dict()),
    }
    np.savez(out / "reference.npz", **arrays)
    (out / "reference.json").write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n")
    (out / "README.md").write_text(
        "# unet_tiny: tiny random diffusers UNet2DModels, their outputs and DDIM schedules\n\n"
        f"Written by `tools/make_unet_fixture.py` (seed {SEED}) with torch {torch.__version__} "
        f"and diffusers {diffusers.__version__}; see that file's docstring for what each file "
        "holds and how to regenerate it:\n\n"
        "    /tmp/torchvenv/bin/python tools/make_unet_fixture.py\n\n"
        "Weights are bfloat16; the references are float32, computed by diffusers from the same "
        "bf16 values upcast.\n"
    )
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        f"wrote {out} ({size / 1e3:.0f} KB); cifar10 parameters "
        f"{reference['ddpm_cifar10_32']['parameters']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
