"""``python -m ppml_hybrid.keyservice``: K as its own process (spec on stdin, ready line on stdout)."""

import sys

from ppml_hybrid.keyservice.main import main

sys.exit(main())
