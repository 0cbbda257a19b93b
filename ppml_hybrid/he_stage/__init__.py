"""HE stage: CKKS parameters, public key material, slot packing and the HE head (blocks split+1..L).

Set ``OMP_NUM_THREADS`` before importing this package to control OpenFHE's threads.

Fenced: what touches the secret key (``he_stage.keys.generate_keys``, ``SecretMaterial``,
``he_stage.codec.decrypt_batch``) is not exported here; K reaches it only through
``ppml_hybrid.keyservice.hazmat`` and tests import it from those modules by name.
"""

from ppml_hybrid.he_stage.backends import CKKSTensor
from ppml_hybrid.he_stage.codec import encrypt_batch
from ppml_hybrid.he_stage.context import ContextInfo, HEContext, build_context
from ppml_hybrid.he_stage.errors import HEError, HEParamsError, KeyMaterialError, LayoutError, WeightsError
from ppml_hybrid.he_stage.head import HEBackward, HEForward, HEHead, HEWeights, count_levels
from ppml_hybrid.he_stage.keys import (
    EvaluatorKeys,
    PublicMaterial,
    deserialize_ciphertext,
    load_public_material,
    serialize_ciphertext,
)
from ppml_hybrid.he_stage.layout import SlotLayout, choose_layout
from ppml_hybrid.he_stage.params import CKKSParams, DepthPlan, derive_params

__all__ = [
    "CKKSParams", "CKKSTensor", "ContextInfo", "DepthPlan", "EvaluatorKeys", "HEBackward", "HEContext",
    "HEError", "HEForward", "HEHead", "HEParamsError", "HEWeights", "KeyMaterialError", "LayoutError",
    "PublicMaterial", "SlotLayout", "WeightsError", "build_context", "choose_layout",
    "count_levels", "derive_params", "deserialize_ciphertext", "encrypt_batch",
    "load_public_material", "serialize_ciphertext",
]
