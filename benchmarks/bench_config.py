"""The run config of ``train.py <overrides>`` for benchmark scripts, composed in one place.

Scripts in this folder import it first (``from bench_config import run_config``): it also puts
the repository root on ``sys.path`` so that ``ppml_hybrid`` imports from this checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from ppml_hybrid.config import RunConfig, parse_run_config  # noqa: E402


def run_config(overrides: Sequence[str]) -> RunConfig:
    """``conf/train.yaml`` with ``overrides``, progress bars off (benchmarks print their own lines)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose(config_name="train", overrides=["train.progress=false", *overrides])
    return parse_run_config(OmegaConf.to_container(raw, resolve=True))
