"""``python -m ppml_hybrid COMMAND``: keygen and the roles of a deployment (:mod:`ppml_hybrid.roles.cli`)."""

from __future__ import annotations

import sys

from ppml_hybrid.roles.cli import (  # noqa: F401 - the console scripts point here
    coordinator_script, dealer_script, evaluator_script, keyservice_script, main, party_script,
)

if __name__ == "__main__":
    sys.exit(main())
