"""Write ``tests/fixtures/llada_tiny/``: a tiny random LLaDA checkpoint and transformers' logits.

The reference the LLaDA path of the masked-diffusion network (``thermojax.models.dream``, run
with LLaDA's tensor names and no logit shift) is checked against. LLaDA's own modeling code is
remote code on the Hugging Face Hub; its ``LLaDALlamaBlock`` is Llama's computation (RMSNorm
``x * rsqrt(mean(x^2) + eps) * weight``, rotary embeddings with the ``rotate_half`` pairing of
``d`` and ``d + head_dim / 2`` and ``inv_freq = 1 / theta^(2j / head_dim)`` in float32,
``softmax(q k^T / sqrt(head_dim)) v`` with ``n_heads / n_kv_heads`` queries per key-value head,
``ff_out(silu(ff_proj(x)) * up_proj(x))``, a final RMSNorm and an untied head) with every
position attending to every position. So the reference is transformers' ``LlamaForCausalLM`` on
the same weights under Llama's names, run bidirectionally. Needs torch and transformers, which
thermojax does not depend on; install them in a side virtual environment and run this file with
it (from the repository root)::

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 transformers==5.23.0 safetensors numpy
    /tmp/torchvenv/bin/python tools/make_llada_fixture.py [--out tests/fixtures/llada_tiny]

What it writes (about 100 KB, the same bytes on every run with the same versions):

- ``config.json``: LLaDA-8B's keys (``model_type`` ``llada``, ``LLaDAModelLM``, a ``llama``
  block, SiLU, RMSNorm, RoPE with ``rope_theta`` 500000, ``rms_norm_eps`` 1e-5, no biases,
  untied head) at a tiny size: ``d_model`` 32, 2 layers, 4 query / 2 key-value heads
  (head_dim 8), ``mlp_hidden_size`` 48, vocabulary 96, ``mask_token_id`` 95;
- ``model.safetensors``: the weights in float32 under LLaDA's names, drawn from a seeded numpy
  generator at scales that make every part of the network matter (unit-variance outputs per
  linear layer, norm weights ``1 + 0.1 z``);
- ``inputs.npz``: ``tokens`` int32 ``[3, 12]`` (some of them the mask token) and ``logits``
  float32 ``[3, 12, 96]``, every position attending to every position;
- ``README.md``: the versions used and how to regenerate.

transformers' ``LlamaModel`` builds a causal mask unless it is given an attention mask that is
already 4-D, which ``masking_utils`` returns as it is: the reference passes an all-zeros additive
float ``[B, 1, L, L]`` mask with the ``eager`` attention, which adds it to the scores and does
nothing else. The script checks that this is really bidirectional: changing the last token
changes position 0's logits, which it does not with transformers' default (causal) mask.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import transformers

SEED = 20250214
BATCH, LENGTH = 3, 12
D_MODEL, LAYERS, HEADS, KV_HEADS, MLP, VOCAB = 32, 2, 4, 2, 48, 96
MASK_TOKEN_ID = VOCAB - 1
RMS_NORM_EPS, ROPE_THETA = 1e-5, 500_000.0
# LLaDA-8B's config.json at this size: every key LLaDAConfig saves.
LLADA_CONFIG = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        "AutoModel": "modeling_llada.LLaDAModelLM",
    },
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": D_MODEL,
    "embedding_dropout": 0.0,
    "embedding_size": VOCAB,
    "eos_token_id": 2,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": MASK_TOKEN_ID,
    "max_sequence_length": 64,
    "mlp_hidden_size": MLP,
    "mlp_ratio": 4,
    "model_type": "llada",
    "multi_query_attention": None,
    "n_heads": HEADS,
    "n_kv_heads": KV_HEADS,
    "n_layers": LAYERS,
    "pad_token_id": 2,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rms_norm_eps": RMS_NORM_EPS,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": ROPE_THETA,
    "scale_logits": False,
    "transformers_version": "4.46.3",
    "use_cache": False,
    "vocab_size": VOCAB,
    "weight_tying": False,
}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "llada_tiny"

# Llama's name for each of LLaDA's (per block, then the model's own).
BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj",
    "ff_norm": "post_attention_layernorm",
    "ff_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "ff_out": "mlp.down_proj",
}
MODEL_NAMES = {
    "model.transformer.wte.weight": "model.embed_tokens.weight",
    "model.transformer.ln_f.weight": "model.norm.weight",
    "model.transformer.ff_out.weight": "lm_head.weight",
}


def llama_name(llada: str) -> str:
    """The Llama name of a LLaDA tensor name."""
    if llada in MODEL_NAMES:
        return MODEL_NAMES[llada]
    prefix, layer, suffix, kind = llada.rsplit(".", 3)
    assert prefix == "model.transformer.blocks" and kind == "weight", llada
    return f"model.layers.{layer}.{BLOCK_NAMES[suffix]}.weight"


def llada_shapes() -> dict[str, tuple[int, ...]]:
    """LLaDA's tensors at this size (no biases, untied head)."""
    head_dim = D_MODEL // HEADS
    shapes = {
        "model.transformer.wte.weight": (VOCAB, D_MODEL),
        "model.transformer.ln_f.weight": (D_MODEL,),
        "model.transformer.ff_out.weight": (VOCAB, D_MODEL),
    }
    block = {
        "attn_norm": (D_MODEL,),
        "ff_norm": (D_MODEL,),
        "q_proj": (D_MODEL, D_MODEL),
        "k_proj": (KV_HEADS * head_dim, D_MODEL),
        "v_proj": (KV_HEADS * head_dim, D_MODEL),
        "attn_out": (D_MODEL, D_MODEL),
        "ff_proj": (MLP, D_MODEL),
        "up_proj": (MLP, D_MODEL),
        "ff_out": (D_MODEL, MLP),
    }
    for i in range(LAYERS):
        shapes |= {f"model.transformer.blocks.{i}.{s}.weight": v for s, v in block.items()}
    return shapes


def random_state(rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Random float32 values for every LLaDA tensor, by name."""
    state = {}
    for name, shape in llada_shapes().items():
        if len(shape) == 1:  # a norm's weight
            values = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name == "model.transformer.wte.weight":
            values = rng.standard_normal(shape)
        else:  # a linear weight [out, in]: unit-variance outputs for unit-variance inputs
            values = rng.standard_normal(shape) / np.sqrt(shape[1])
        state[name] = torch.tensor(values, dtype=torch.float32)
    return state


def bidirectional_mask(batch: int, length: int) -> torch.Tensor:
    """The all-zeros ``[B, 1, L, L]`` additive mask: every query sees every key."""
    return torch.zeros(batch, 1, length, length, dtype=torch.float32)


def logits(model: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor | None) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=tokens, attention_mask=mask).logits.float().numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)

    config = transformers.LlamaConfig(
        hidden_size=D_MODEL,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        intermediate_size=MLP,
        vocab_size=VOCAB,
        rms_norm_eps=RMS_NORM_EPS,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        max_position_embeddings=LLADA_CONFIG["max_sequence_length"],
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        attn_implementation="eager",
    )
    model = transformers.LlamaForCausalLM(config).float().eval()
    state = random_state(rng)
    model.load_state_dict({llama_name(n): v for n, v in state.items()}, strict=True)
    if model.model.rotary_emb.inv_freq.numel() != D_MODEL // HEADS // 2:
        raise SystemExit("the reference's rotary embedding is not over the whole head_dim")

    tokens = rng.integers(3, MASK_TOKEN_ID, size=(BATCH, LENGTH))
    tokens[:, LENGTH // 3 :][rng.random((BATCH, LENGTH - LENGTH // 3)) < 0.5] = MASK_TOKEN_ID
    tokens = torch.tensor(tokens, dtype=torch.long)
    everything = bidirectional_mask(BATCH, LENGTH)

    full = logits(model, tokens, everything)
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % MASK_TOKEN_ID
    if np.allclose(logits(model, changed, everything)[:, 0], full[:, 0]):
        raise SystemExit("the reference is causal: the last token does not reach position 0")
    if not np.array_equal(logits(model, changed, None)[:, 0], logits(model, tokens, None)[:, 0]):
        raise SystemExit("transformers' default mask is not causal: this check proves nothing")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(LLADA_CONFIG, indent=2, sort_keys=True) + "\n")
    safetensors.torch.save_file(
        {name: value.contiguous() for name, value in state.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},  # one key: safetensors orders several differently per run
    )
    np.savez(out / "inputs.npz", tokens=tokens.numpy().astype(np.int32), logits=full)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    (out / "README.md").write_text(
        "# llada_tiny: a tiny random LLaDA checkpoint and transformers' bidirectional logits\n\n"
        f"Written by `tools/make_llada_fixture.py` (seed {SEED}) with torch "
        f"{versions['torch']} and transformers {versions['transformers']}; see that file's "
        "docstring for what each file holds and how to regenerate it:\n\n"
        "    /tmp/torchvenv/bin/python tools/make_llada_fixture.py\n\n"
        "Weights are float32 under LLaDA's names; the reference logits are float32, computed by "
        "transformers' LlamaForCausalLM on the same weights under Llama's names, with a full "
        "(non-causal) 4-D additive attention mask.\n"
    )
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({size / 1e3:.0f} KB); max |logits| {np.abs(full).max():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
