"""``python -m ppl_dgm.cli``: the same as the ``ppl-dgm`` command."""

import sys

from . import main

sys.exit(main())
