"""ppml_hybrid: privacy-preserving CNN training for medical imaging.

CrypTen secret sharing for the convolutional blocks, OpenFHE CKKS for the dense blocks,
DP-SGD for every released gradient. ``ppml_hybrid.pipeline.train`` is the entry point.
"""

__version__ = "0.1.0"
