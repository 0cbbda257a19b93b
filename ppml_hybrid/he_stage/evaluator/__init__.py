"""HE evaluator E: the HE head as a service holding only public material, and HE->SS masking.

Public API: :func:`spawn_evaluator`, :class:`EvaluatorSpec`, :class:`EvaluatorClient`,
:class:`PartyMaskClient`, :class:`PartyConversionClient`.
"""

from ppml_hybrid.he_stage.evaluator.client import EvaluatorClient, MaskReceipt, PartyMaskClient, StepReceipt
from ppml_hybrid.he_stage.evaluator.party import PartyConversionClient
from ppml_hybrid.he_stage.evaluator.process import spawn_evaluator
from ppml_hybrid.he_stage.evaluator.spec import EvaluatorSpec

__all__ = ["EvaluatorClient", "EvaluatorSpec", "MaskReceipt", "PartyConversionClient", "PartyMaskClient",
           "StepReceipt", "spawn_evaluator"]
