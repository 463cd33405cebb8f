"""``python -m app.cli``: the same entry point as ``samplescope``."""

import sys

from app.cli.main import main

sys.exit(main())
