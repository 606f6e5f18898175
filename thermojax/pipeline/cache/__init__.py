"""The on-disk cache: the generic locked store (also used by the Ray launcher), the pipeline's stage entries and their validation when read."""
