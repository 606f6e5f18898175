"""Quantized checkpoints: the one writer and the reloader.

layout (the folder, its file and tensor names), document (``quantization.json``), folder
(staging and publishing), activations, orbax_copy, export (a Hugging Face checkpoint, streamed),
export_digits (the digits DDPM), export_lm (a masked-diffusion LM), compressed_tensors (its serving
layout), reload.
"""
