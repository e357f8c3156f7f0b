"""``python -m reenact.cli ...`` is ``reenact ...``."""

from reenact.cli import reenact_script

reenact_script()
