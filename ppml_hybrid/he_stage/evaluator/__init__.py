"""HE evaluator E: the HE head as a service holding only public material, and HE->SS masking.

Public API: :func:`spawn_evaluator`, :class:`EvaluatorSpec`. Its clients
(:class:`~ppml_hybrid.rpc.evaluator_client.EvaluatorClient`,
:class:`~ppml_hybrid.rpc.evaluator_client.PartyMaskClient`) and refusal types
(:mod:`ppml_hybrid.rpc.evaluator_errors`) are wire code in :mod:`ppml_hybrid.rpc`; the party side
of HE->SS is :class:`~ppml_hybrid.protocols.conversion_client.PartyConversionClient`.
"""

from ppml_hybrid.he_stage.evaluator.process import spawn_evaluator
from ppml_hybrid.he_stage.evaluator.spec import EvaluatorSpec

__all__ = ["EvaluatorSpec", "spawn_evaluator"]
