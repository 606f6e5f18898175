"""``python -m thermojax.models.train_digits``: forwards to :mod:`thermojax.models.digits.train`."""

from thermojax.models.digits.train import main

if __name__ == "__main__":
    main()
