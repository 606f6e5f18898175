"""Errors that mean the user asked for something invalid (not a bug in thermojax)."""


class UserInputError(ValueError):
    """A user mistake (bad config value, missing path); the CLI prints it as one ``error:`` line."""
