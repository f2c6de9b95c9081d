"""The ``btunet`` command line: the sub-commands (``commands``), the parser (``cli_args``),
``btunet predict`` (``predict_cli``), where results go (``outputs``) and the headless demo."""
from .commands import main

__all__ = ["main"]
