"""thermojax's Hydra launcher: fans a multirun out over Ray, with resume and per-job failure records."""
