"""``python -m train.eval``: see :mod:`train.eval.cli`."""

import sys

from train.eval.cli import main

sys.exit(main())
