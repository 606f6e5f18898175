"""``python -m thermojax.models.train_bytes_lm``: forwards to :mod:`thermojax.models.dream.train`."""

from thermojax.models.dream.train import main

if __name__ == "__main__":
    main()
