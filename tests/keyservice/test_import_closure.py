"""K's import closure is short and listed: no PyTorch, CrypTen, Opacus, MONAI, pandas or scikit-learn
(its enclave image carries what it imports; torch alone is ~2.5 GiB of wheels).

A fresh interpreter imports every module of ``ppml_hybrid.keyservice`` and draws noise (the
sampler loads OpenDP lazily), then lists the top-level packages it holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# what K's image must hold (pyproject: openfhe, grpcio, protobuf, cryptography, cbor2, asn1crypto,
# numpy, scipy (the HE head's sparse plans, for the rotation keys), opendp (+ deprecated, wrapt))
ALLOWED = {"ppml_hybrid", "openfhe", "grpc", "google", "cryptography", "cbor2", "asn1crypto", "numpy", "scipy",
           "opendp", "deprecated", "wrapt", "typing_extensions"}
# imported by grpc / numpy only when installed (dev tools of this environment; not in K's image)
OPTIONAL = {"grpc_tools", "charset_normalizer"}
OWN = ("ppml_hybrid.keyservice", "ppml_hybrid.rpc", "ppml_hybrid.he_stage", "ppml_hybrid.config",
       "ppml_hybrid.errors", "ppml_hybrid.model.spec")

PROBE = """
import json, pkgutil, importlib, sys
import ppml_hybrid.keyservice as ks
for m in pkgutil.walk_packages(ks.__path__, "ppml_hybrid.keyservice."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)
from ppml_hybrid.keyservice.noise import discrete_gaussian
discrete_gaussian(4, scale=2.0)
std = set(sys.stdlib_module_names)
print(json.dumps(sorted(k for k in sys.modules if k.split(".")[0] not in std)))
"""


def test_the_key_service_imports_only_its_listed_packages():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    tops = {m.split(".")[0] for m in modules if not m.startswith("_") and m != "cython_runtime"}  # extension internals
    assert not {"torch", "crypten", "opacus", "monai", "sklearn", "pandas", "nibabel", "pydicom", "hydra",
                "omegaconf"} & tops
    assert tops - ALLOWED - OPTIONAL == set(), sorted(tops - ALLOWED - OPTIONAL)
    own = {m for m in modules if m.startswith("ppml_hybrid.")}
    assert {m for m in own if not m.startswith(OWN) and m != "ppml_hybrid.model"} == set()
