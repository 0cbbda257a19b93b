"""Write the manifest of every input of the enclave image: ``enclave/build-manifest.json``.

    .venv/bin/python enclave/build_manifest.py [--out enclave/build-manifest.json]

What goes into the image, as the Dockerfile and build.sh put it together: the base image (by
digest), every wheel with the hashes the lock records (``requirements-keyservice.txt``), the
files of the project's wheel (the ``ppml_hybrid`` package as pyproject.toml selects it), the
other files the Dockerfile copies, the environment and the entry point. No Debian package and
nothing fetched at run time. Two builds from the same manifest and the same sources give the
same image and so the same PCR0 (reproducing it stays an operator step: no Docker engine here);
``build.sh`` records the hashes of the files it actually used in ``out/build-inputs.txt``.
``tests/enclave/test_build_manifest.py`` regenerates the manifest and compares: adding or
removing a file the image carries, or changing a pin, shows up as a diff to commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]


def _dockerfile(text: str) -> Dict[str, Any]:
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    copies = [c.split()[0] for c in re.findall(r"^COPY\s+(.+)$", text, re.M)]
    entry = re.search(r"^ENTRYPOINT\s+(\[.*\])", text, re.M)
    env = re.search(r"^ENV\s+((?:.*\\\n)*.*)$", text, re.M)
    return {"base_images": froms, "copied": copies, "entrypoint": json.loads(entry.group(1)) if entry else None,
            "env": [list(kv) for kv in sorted(re.findall(r"(\w+)=(\S+)", env.group(1)))] if env else []}


def _wheels(requirements: str) -> List[Dict[str, Any]]:
    out, current = [], None
    for line in requirements.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+==[^\s\\;]+)", line)
        if m:
            current = {"requirement": m.group(1), "hashes": []}
            out.append(current)
        for h in re.findall(r"--hash=(sha256:[0-9a-f]{64})", line):
            if current is not None:
                current["hashes"].append(h)
    return out


def _package_data() -> Dict[str, List[str]]:
    """pyproject.toml's ``[tool.setuptools.package-data]``: what the wheel carries besides code."""
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # 3.10: tomli (a dev dependency)
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return project["tool"]["setuptools"]["package-data"]


def _package_files() -> List[str]:
    files = [p for p in (ROOT / "ppml_hybrid").rglob("*.py") if "__pycache__" not in p.parts]
    for package, patterns in _package_data().items():
        for pattern in patterns:
            files.extend((ROOT / package.replace(".", "/")).glob(pattern))
    return sorted(str(p.relative_to(ROOT)) for p in files)


def manifest() -> Dict[str, Any]:
    docker = _dockerfile((ROOT / "enclave" / "Dockerfile").read_text())
    requirements = (ROOT / "enclave" / "requirements-keyservice.txt").read_text()
    return {
        "what": "every input of the enclave image (enclave/build_manifest.py)",
        **docker,
        "requirements_sha256": hashlib.sha256(requirements.encode()).hexdigest(),
        "wheels": _wheels(requirements),
        "project_wheel_files": _package_files(),
        "debian_packages": [],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "enclave" / "build-manifest.json")
    args = ap.parse_args()
    args.out.write_text(json.dumps(manifest(), indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
