"""What is measured by running a model: per-step calibration, sampling, GPTQ Hessians, activation statistics from a file, the memory a run will need."""
