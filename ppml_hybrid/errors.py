"""Typed errors. Every message says what was wrong and, where it helps, what to do.

All project errors derive from :class:`PPMLError` so the command line can print them
without a traceback and exit non-zero.
"""

from __future__ import annotations


class PPMLError(Exception):
    """Base class of every error this project raises on purpose."""

    exit_code = 1


class ConfigError(PPMLError):
    """A configuration value is missing, of the wrong type, or out of range."""

    exit_code = 2


class SplitError(ConfigError):
    """``split_layer`` does not fit the model (out of range, or a non-polynomial block on the HE side)."""


class DataError(PPMLError):
    """A data file, a labels-CSV row or the dataset as a whole is unusable."""

    exit_code = 3


class TrainingDivergedError(PPMLError):
    """The trained model's outputs are not finite (the learning rate is too high for the run)."""

    exit_code = 7


class PrivacyBudgetError(PPMLError):
    """The next release would take this party's privacy ledger beyond ``dp.max_epsilon``."""

    exit_code = 8


class Interrupted(PPMLError):
    """Ctrl-C or SIGTERM stopped the run; its checkpoint holds the last completed step."""

    exit_code = 130  # the shell's code for a run stopped by SIGINT

    def __init__(self, output_dir: "str | None", step: int) -> None:
        where = (f"checkpoint of step {step} in {output_dir}/checkpoint.pt; continue with train.resume={output_dir}"
                 if output_dir else f"after step {step} (no output_dir: nothing saved)")
        super().__init__(f"stopped by Ctrl-C or SIGTERM: {where}")
        self.step = step
