"""``python -m thermojax.launch``: forwards to :mod:`thermojax.cli.launch`, where the command lives."""

from thermojax.cli.launch import main

if __name__ == "__main__":
    main()
