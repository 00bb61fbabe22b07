"""``python -m deepatlas`` is the ``deepatlas`` command (and what ``torchrun -m deepatlas`` starts)."""

import sys

from deepatlas.cli.main import main

sys.exit(main())
