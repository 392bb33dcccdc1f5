"""``python -m cnnext._bench``: the benchmark suite without the ``cnnext`` command."""

import sys

from . import main

sys.exit(main())
