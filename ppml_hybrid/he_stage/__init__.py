"""HE stage: CKKS parameters, keys, slot packing and the HE head (blocks split+1..L).

Set ``OMP_NUM_THREADS`` before importing this package to control OpenFHE's threads.
"""

from ppml_hybrid.he_stage.backends import CKKSTensor
from ppml_hybrid.he_stage.codec import decrypt_batch, encrypt_batch
from ppml_hybrid.he_stage.context import ContextInfo, HEContext, build_context
from ppml_hybrid.he_stage.errors import HEError, HEParamsError, KeyMaterialError, LayoutError, WeightsError
from ppml_hybrid.he_stage.head import HEBackward, HEForward, HEHead, HEWeights, count_levels
from ppml_hybrid.he_stage.keys import (
    EvaluatorKeys,
    PublicMaterial,
    SecretMaterial,
    deserialize_ciphertext,
    generate_keys,
    load_public_material,
    serialize_ciphertext,
)
from ppml_hybrid.he_stage.layout import SlotLayout, choose_layout
from ppml_hybrid.he_stage.params import CKKSParams, DepthPlan, derive_params

__all__ = [
    "CKKSParams", "CKKSTensor", "ContextInfo", "DepthPlan", "EvaluatorKeys", "HEBackward", "HEContext",
    "HEError", "HEForward", "HEHead", "HEParamsError", "HEWeights", "KeyMaterialError", "LayoutError",
    "PublicMaterial", "SecretMaterial", "SlotLayout", "WeightsError", "build_context", "choose_layout",
    "count_levels", "decrypt_batch", "derive_params", "deserialize_ciphertext", "encrypt_batch",
    "generate_keys", "load_public_material", "serialize_ciphertext",
]
