"""Write ``tests/fixtures/qwen2_tiny/``: a tiny random Qwen2 checkpoint and transformers' logits.

The reference the Dream network (``thermojax.models.dream``) is checked against: Hugging Face
transformers' own ``Qwen2ForCausalLM``, run bidirectionally as Dream runs it. Needs torch and
transformers, which thermojax does not depend on; install them in a side virtual environment
and run this file with it (from the repository root)::

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 transformers==5.23.0 safetensors numpy
    /tmp/torchvenv/bin/python tools/make_qwen2_fixture.py [--out tests/fixtures/qwen2_tiny]

What it writes (about 320 KB, the same bytes on every run with the same versions):

- ``config.json``: transformers' ``Qwen2Config`` (hidden 64, 2 layers, 4 query / 2 key-value
  heads, head_dim 16, MLP 128, vocabulary 320, rms_norm_eps 1e-5, rope_theta 10000, untied
  ``lm_head``) plus Dream's ``mask_token_id`` (319);
- ``model.safetensors``: the weights in bfloat16, drawn from a seeded numpy generator at
  scales that make every part of the network matter (unit-variance outputs per linear layer,
  norm weights ``1 + 0.1 z``, biases ``0.1 z``);
- ``inputs.npz``: ``tokens`` int32 ``[2, 16]`` (some of them the mask token), ``logits`` float32
  ``[2, 16, 320]`` with every position attending to every position, ``key_mask`` bool
  ``[2, 16]`` (row 1 has 4 padding positions at the end) and ``logits_padded``, the logits with
  those keys masked out;
- ``README.md``: the versions used and how to regenerate.

The reference runs in float32 on the bf16-rounded weights (upcast), so the fixture also checks
bf16 reading. transformers' ``Qwen2Model`` builds a causal mask unless it is given an attention
mask that is already 4-D, which ``masking_utils`` returns as it is: the reference passes an
additive float ``[B, 1, L, L]`` mask (zeros, ``finfo.min`` at padding keys) with the ``eager``
attention, which adds it to the scores and does nothing else. The script checks that this is
really bidirectional: changing the last token changes position 0's logits, which it does not
with transformers' default (causal) mask.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import transformers

SEED = 20240610
BATCH, LENGTH = 2, 16
PADDING = 4  # padded positions at the end of row 1 in the key-mask case
CONFIG = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 320,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10_000.0,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
MASK_TOKEN_ID = 319
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "qwen2_tiny"


def random_state(model: torch.nn.Module, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Random bf16-rounded float32 values for every tensor of ``model``, by name (file order)."""
    state = {}
    for name, tensor in model.state_dict().items():
        shape = tuple(tensor.shape)
        if name.endswith("norm.weight"):
            values = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            values = 0.1 * rng.standard_normal(shape)
        elif name == "model.embed_tokens.weight":
            values = rng.standard_normal(shape)
        else:  # a linear weight [out, in]: unit-variance outputs for unit-variance inputs
            values = rng.standard_normal(shape) / np.sqrt(shape[1])
        state[name] = torch.tensor(values, dtype=torch.float32).to(torch.bfloat16).float()
    return state


def additive_mask(key_mask: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` booleans (True: a real key) -> the ``[B, 1, L, L]`` float mask transformers adds
    to the attention scores: every query sees every real key."""
    blocked = torch.full(key_mask.shape, torch.finfo(torch.float32).min)
    row = torch.where(key_mask, torch.zeros(()), blocked)
    return row[:, None, None, :].expand(key_mask.shape[0], 1, key_mask.shape[1], key_mask.shape[1])


def logits(model: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor | None) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=tokens, attention_mask=mask).logits.float().numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)

    config = transformers.Qwen2Config(**CONFIG, attn_implementation="eager")
    config.mask_token_id = MASK_TOKEN_ID  # Dream's extra key, saved into config.json
    model = transformers.Qwen2ForCausalLM(config).float().eval()
    state = random_state(model, rng)
    model.load_state_dict(state, strict=True)

    tokens = rng.integers(3, MASK_TOKEN_ID, size=(BATCH, LENGTH))
    tokens[:, LENGTH // 2 :][rng.random((BATCH, LENGTH - LENGTH // 2)) < 0.5] = MASK_TOKEN_ID
    tokens = torch.tensor(tokens, dtype=torch.long)
    everything = torch.ones(BATCH, LENGTH, dtype=torch.bool)
    key_mask = everything.clone()
    key_mask[1, LENGTH - PADDING :] = False

    full = logits(model, tokens, additive_mask(everything))
    padded = logits(model, tokens, additive_mask(key_mask))
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % MASK_TOKEN_ID
    if np.allclose(logits(model, changed, additive_mask(everything))[:, 0], full[:, 0]):
        raise SystemExit("the reference is causal: the last token does not reach position 0")
    if not np.array_equal(logits(model, changed, None)[:, 0], logits(model, tokens, None)[:, 0]):
        raise SystemExit("transformers' default mask is not causal: this check proves nothing")
    if np.allclose(padded[1, : LENGTH - PADDING], full[1, : LENGTH - PADDING]):
        raise SystemExit("masking the padding keys changed nothing")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    safetensors.torch.save_file(
        {name: value.to(torch.bfloat16).contiguous() for name, value in state.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},  # one key: safetensors orders several differently per run
    )
    np.savez(
        out / "inputs.npz",
        tokens=tokens.numpy().astype(np.int32),
        logits=full.astype(np.float32),
        key_mask=key_mask.numpy(),
        logits_padded=padded.astype(np.float32),
    )
    (out / "README.md").write_text(
        "# qwen2_tiny: a tiny random Qwen2 checkpoint and transformers' bidirectional logits\n\n"
        f"Written by `tools/make_qwen2_fixture.py` (seed {SEED}) with torch "
        f"{versions['torch']} and transformers {versions['transformers']}; see that file's "
        "docstring for what each file holds and how to regenerate it:\n\n"
        "    /tmp/torchvenv/bin/python tools/make_qwen2_fixture.py\n\n"
        "Weights are bfloat16; the reference logits are float32, computed from the same "
        "bf16 values upcast, with a full (non-causal) 4-D additive attention mask.\n"
    )
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({size / 1e3:.0f} KB); max |logits| {np.abs(full).max():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
