"""Errors a user can act on; the CLI prints them as one line and exits with status 2."""


class BTUnetError(ValueError):
    """Bad input: the message says what is wrong and what to do."""


class CheckpointError(BTUnetError):
    """A file that is not a readable btunet checkpoint of the expected kind."""


class Cancelled(Exception):
    """The user asked a running prediction to stop."""
