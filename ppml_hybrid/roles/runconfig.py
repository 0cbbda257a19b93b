"""Every role reads the same run config: the project's ``conf/`` composed with the Hydra
overrides given on its command line (``split_layer=3 dp.noise_multiplier=1.1 ...``), exactly as
``train.py`` composes it, or a complete run config file (``--run-config run.yaml``, e.g. the
one ``train.py`` saves, or :func:`write_run_config`) with ``key=value`` overrides on top. Site-local values (``data.root``, ``data.labels``, ``output_dir``)
may differ per host; everything else must match (``ppml_hybrid.config.run_digest``, compared
on every link before the first message)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ppml_hybrid.config import RunConfig, parse_run_config
from ppml_hybrid.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def load_run_config(path: Path, overrides: Sequence[str] = (), *, output_dir: Optional[str] = None) -> RunConfig:
    """A complete run config from a YAML file (as :func:`write_run_config` writes it), with
    ``key=value`` overrides on top (typically this host's ``data.root``)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not path.is_file():
        raise ConfigError(f"--run-config {path}: no such file")
    try:
        merged = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides)))
        container = OmegaConf.to_container(merged, resolve=True)
    except (OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(f"--run-config {path} with {' '.join(overrides) or 'no overrides'}: {exc}") from None
    if not isinstance(container, dict):
        raise ConfigError(f"--run-config {path} is not a mapping of run config keys")
    container["output_dir"] = output_dir
    return parse_run_config(container)


def write_run_config(cfg: RunConfig, path: Path) -> None:
    """``cfg`` as the YAML file every role of a run can read with ``--run-config`` (site-local
    paths left out: each host sets its own)."""
    import dataclasses

    import yaml

    raw = dataclasses.asdict(cfg)
    raw.pop("output_dir", None)
    raw["data"]["root"] = raw["data"]["labels"] = None
    raw["train"]["resume"] = None  # the coordinator's own checkpoint folder

    def plain(node):
        if isinstance(node, dict):
            return {k: plain(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [plain(v) for v in node]
        return node

    path.write_text(yaml.safe_dump(plain(raw), sort_keys=False))


def compose_run_config(overrides: Sequence[str], *, output_dir: Optional[str] = None) -> RunConfig:
    """The run config of ``conf/train.yaml`` with ``overrides`` (Hydra syntax)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not (CONF_DIR / "train.yaml").is_file():
        raise ConfigError(f"the run config folder {CONF_DIR} is missing: run from a checkout of the project")
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            raw = compose(config_name="train", overrides=list(overrides))
        missing = sorted(OmegaConf.missing_keys(raw))
        if missing:
            raise ConfigError(f"missing required config value(s): {', '.join(missing)}")
        container = OmegaConf.to_container(raw, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"run config overrides {' '.join(overrides) or '(none)'}: {exc}") from None
    container.pop("hydra", None)
    container["output_dir"] = output_dir
    return parse_run_config(container)
