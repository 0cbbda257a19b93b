"""``python -m ppml_hybrid.he_stage.evaluator``: E as its own process."""

import sys

from ppml_hybrid.he_stage.evaluator.main import main

sys.exit(main())
