"""``python -m reenact.cli ...`` is ``reenact ...``."""

import sys

from reenact.cli import main

sys.exit(main())
