"""HE stage: dense blocks on OpenFHE CKKS ciphertexts (in progress)."""
