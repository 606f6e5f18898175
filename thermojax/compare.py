"""``python -m thermojax.compare``: forwards to :mod:`thermojax.cli.compare`, where the command lives."""

from thermojax.cli.compare import main

if __name__ == "__main__":
    main()
