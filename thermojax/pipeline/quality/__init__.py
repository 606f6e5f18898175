"""How quantized samples compare with fp32 samples, one module per kind of sample."""
