"""Share <-> ciphertext conversions between the MPC (CrypTen) and the HE stage (CKKS).

* :mod:`.ss_to_he`: exact SS->HE with wrap-bit correction (design section 6), 2 or more parties;
* :mod:`.he_to_ss`: the party side of HE->SS, masked-decryption shares into a CrypTen tensor;
* :mod:`.params`: the conversion's parameters, validated at start-up.
"""

from ppml_hybrid.protocols.errors import ChainError, ConversionError, ConversionParamsError
from ppml_hybrid.protocols.params import ConversionParams

__all__ = ["ChainError", "ConversionError", "ConversionParams", "ConversionParamsError"]
