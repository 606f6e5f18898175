"""``python -m thermojax.baseline``: forwards to :mod:`thermojax.cli.baseline`, where the command lives."""

from thermojax.cli.baseline import main

if __name__ == "__main__":
    main()
