"""Train the CNN: ``python train.py split_layer=3`` or ``python train.py -m split_layer=3,4,5``.

A thin Hydra entry point: compose the config, check it, call ``ppml_hybrid.pipeline.train``.
Project errors print one clear line and exit non-zero. In a multirun a failed job writes
``error.json`` into its directory and the sweep goes on; the sweep summary lists the failure
and the multirun exits with the first failed job's code (``ppml_hybrid.sweep``). A failed or
interrupted single run also leaves ``error.json`` (and no ``metrics.json``) in its folder; an
interrupted run (Ctrl-C or SIGTERM) leaves ``checkpoint.pt`` too, which ``train.resume=DIR`` continues.
"""

from __future__ import annotations

import logging
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ppml_hybrid.config import parse_run_config
from ppml_hybrid.errors import ConfigError, Interrupted, PPMLError
from ppml_hybrid.pipeline import train
from ppml_hybrid.sweep import record_failure

log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> dict:
    # SIGTERM as Ctrl-C: the run's finally blocks stop its role processes and leave a checkpoint
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigError(f"missing required config value(s): {', '.join(missing)}")
        raw = OmegaConf.to_container(cfg, resolve=True)
        raw["output_dir"] = HydraConfig.get().runtime.output_dir
        return train(parse_run_config(raw))
    except PPMLError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        hydra_cfg = HydraConfig.get()
        # the run's folder says it failed (error.json, no metrics.json): it never looks like a result
        record_failure(hydra_cfg.runtime.output_dir, exc)
        if hydra_cfg.mode == RunMode.MULTIRUN and not isinstance(exc, Interrupted):  # Ctrl-C ends the sweep
            return {"error": f"{type(exc).__name__}: {exc}"}
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # before the first step (training itself leaves a checkpoint: Interrupted)
        exc = Interrupted(None, 0)
        record_failure(HydraConfig.get().runtime.output_dir, exc)
        log.error("stopped by Ctrl-C or SIGTERM before training began: nothing to resume")
        sys.exit(exc.exit_code)

if __name__ == "__main__":
    main()
