"""Check a compressed-tensors export with compressed-tensors itself (not part of ``make test``).

Run it with the Python of a side environment that has torch and compressed-tensors (and,
optionally, transformers; README: Exporting for serving, says how to make one), naming the
Python of thermojax's environment::

    python -m thermojax.baseline model=pydoc-mdlm bit_width=4 export.path=/tmp/ct-w4 \\
        export.format=compressed-tensors
    side/bin/python tools/check_compressed_tensors.py /tmp/ct-w4 \\
        --thermojax-python .venv/bin/python [--transformers]

It validates ``config.json``'s ``quantization_config`` with the library's
``QuantizationConfig`` (and that the library dumps it back unchanged), decompresses every
quantized layer with the library's own model-free dequantizer
(``CompressedTensorsDequantizer.validate``: ``PackedQuantizationCompressor.decompress`` per
module, and a check that no compressed tensor is left over), in float32, and writes the weights
to an ``.npz``. With ``--transformers`` it also loads the folder with
``AutoModelForCausalLM.from_pretrained`` (on a copy whose config names ``Qwen2ForCausalLM`` when
the architecture is one transformers does not know but the tensors are Qwen2's, as Dream's
are), by its default route and with ``dequantize=True``, runs one forward pass each and adds
the layers' weights.
The ``compare`` step then runs in thermojax's environment: it reloads the export
(``thermojax.load_quantized``), dequantizes every QTensor with ``thermojax.dequantize`` and
prints each layer's largest absolute difference from the library's weights; it exits with
status 1 if any differs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def decompress(folder: Path, out: Path, *, with_transformers: bool) -> None:
    """The library's weights of every quantized layer (side environment)."""
    import numpy as np
    import torch
    from compressed_tensors import __version__ as ct_version
    from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import (
        CompressedTensorsDequantizer,
    )
    from compressed_tensors.quantization import QuantizationConfig
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    written = config["quantization_config"]
    parsed = QuantizationConfig.model_validate(written)
    dumped = json.loads(json.dumps(parsed.model_dump(), default=str))
    same = dumped == {key: written.get(key) for key in dumped}
    print(f"compressed-tensors {ct_version}, torch {torch.__version__}")
    print(f"quantization_config: valid; the library dumps it back unchanged: {same}")
    if not same:
        print(f"  the library's dump: {json.dumps(dumped, sort_keys=True)}")
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors |= load_file(str(file))
    packed = sorted(name.removesuffix("_packed") for name in tensors if name.endswith("_packed"))
    dense = CompressedTensorsDequantizer(folder, dtype=torch.float32).validate(dict(tensors))
    arrays = {f"ct/{name}": dense[name].numpy() for name in packed}
    print(f"decompressed {len(packed)} layers with CompressedTensorsDequantizer")
    if with_transformers:
        arrays |= _transformers_weights(folder, config, packed)
    np.savez(out, **arrays)


def _transformers_weights(folder: Path, config: dict, packed: list[str]) -> dict:
    """The layers' weights as transformers loads the folder and runs one forward pass, by its
    default route (the layers kept compressed, decompressed on first use: ``hf-default/``) and
    with ``CompressedTensorsConfig(dequantize=True)`` (dequantized as they load:
    ``hf-dequantize/``); a route that fails prints why and adds nothing."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    print(f"transformers {transformers.__version__}:")
    weights = {}
    with tempfile.TemporaryDirectory() as scratch:
        path = folder
        try:
            transformers.AutoConfig.from_pretrained(folder, trust_remote_code=False)
        except (ValueError, KeyError) as err:
            if not all(n.startswith(("model.layers.", "lm_head.")) for n in packed):
                print(f"  not loaded: {type(err).__name__}: {str(err).splitlines()[0]}")
                return {}
            print(f"  {config.get('architectures')}: unknown to transformers; loaded as Qwen2")
            path = Path(scratch) / "as-qwen2"
            path.mkdir()
            for file in folder.iterdir():
                if file.suffix == ".safetensors" or file.name.endswith(".index.json"):
                    (path / file.name).symlink_to(file.resolve())
            as_qwen2 = config | {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}
            (path / "config.json").write_text(json.dumps(as_qwen2))
        routes = {"hf-default": {}, "hf-dequantize": {"dequantize": True}}
        for route, options in routes.items():
            extra = {"quantization_config": CompressedTensorsConfig(**options)} if options else {}
            try:
                model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **extra)
                with torch.no_grad():
                    model(torch.zeros((1, 4), dtype=torch.long))  # decompresses on first use
            except Exception as err:  # noqa: BLE001 (report what happened, whatever it is)
                print(f"  {route}: not loaded: {type(err).__name__}: {str(err).splitlines()[0]}")
                continue
            print(f"  {route}: loaded {type(model).__name__}; a forward pass ran")
            for name in packed:
                module = model.get_submodule(name.removesuffix(".weight"))
                weights[f"{route}/{name}"] = module.weight.detach().float().numpy()
    return weights


def compare(folder: Path, npz: Path) -> int:
    """Each layer's largest absolute difference from thermojax's weights (thermojax's
    environment); 1 if any differs."""
    import jax
    import numpy as np

    import thermojax

    loaded = thermojax.load_quantized(folder)
    library = np.load(npz)
    worst = {}
    rows = []
    for key in library.files:
        source, name = key.split("/", 1)
        ours = np.asarray(jax.device_get(thermojax.dequantize(loaded.qtensors[name])))
        theirs = library[key]
        assert theirs.shape == ours.shape, (key, theirs.shape, ours.shape)
        diff = float(np.max(np.abs(theirs.astype(np.float64) - ours)))
        worst[source] = max(worst.get(source, 0.0), diff)
        rows.append((source, name, loaded.qtensors[name].bits, diff, float(np.max(np.abs(ours)))))
    missing = set(loaded.qtensors) - {key.split("/", 1)[1] for key in library.files}
    print(f"{'source':6} {'bits':>4} {'max |diff|':>10} {'max |w|':>8}  layer")
    for source, name, bits, diff, largest in rows:
        print(f"{source:6} {bits:>4} {diff:>10.3g} {largest:>8.3g}  {name}")
    for source, diff in worst.items():
        what = "the library" if source == "ct" else f"transformers ({source})"
        print(f"{what}: {sum(r[0] == source for r in rows)} layers, max |diff| {diff:.3g}")
    if missing:
        print(f"not decompressed by the library: {sorted(missing)}")
    return int(bool(missing) or any(diff != 0.0 for diff in worst.values()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the compressed-tensors export")
    parser.add_argument("--thermojax-python", help="thermojax's Python, for the compare step")
    parser.add_argument("--transformers", action="store_true", help="also load it with them")
    parser.add_argument("--compare", type=Path, help=argparse.SUPPRESS)  # the second step
    args = parser.parse_args(argv)
    if args.compare is not None:
        return compare(args.folder, args.compare)
    with tempfile.TemporaryDirectory() as scratch:
        npz = Path(scratch) / "library.npz"
        decompress(args.folder, npz, with_transformers=args.transformers)
        if args.thermojax_python is None:
            print(f"no --thermojax-python: nothing compared ({npz} is removed)")
            return 0
        step = [args.thermojax_python, __file__, str(args.folder), "--compare", str(npz)]
        return subprocess.run(step, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
