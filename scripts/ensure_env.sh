# Sourced by ./train.sh and ./test.sh: make sure .venv matches uv.lock, creating it on first use.
# OpenFHE's wheels need CPython 3.10 (glibc >= 2.35) or 3.12 (glibc >= 2.38); see README.
set -euo pipefail
export UV_PYTHON_DOWNLOADS=never

find_python() {
    local candidates=()
    [ -n "${PPML_PYTHON:-}" ] && candidates+=("$PPML_PYTHON")
    candidates+=("$HOME"/.pyenv/versions/3.10*/bin/python3.10)
    command -v python3.10 >/dev/null 2>&1 && candidates+=("$(command -v python3.10)")
    candidates+=("$HOME"/.pyenv/versions/3.12*/bin/python3.12)
    command -v python3.12 >/dev/null 2>&1 && candidates+=("$(command -v python3.12)")
    for py in "${candidates[@]}"; do
        if [ -x "$py" ]; then echo "$py"; return 0; fi
    done
    echo "error: no Python 3.10 or 3.12 found (OpenFHE has wheels only for those); install one" \
         "(e.g. 'pyenv install 3.10') or set PPML_PYTHON=/path/to/python3.10" >&2
    return 1
}

find_uv() {
    if command -v uv >/dev/null 2>&1; then command -v uv; return 0; fi
    if [ -x "$HOME/.local/bin/uv" ]; then echo "$HOME/.local/bin/uv"; return 0; fi
    echo "installing uv (first run) ..." >&2
    "$1" -m pip install --quiet --user "uv==0.13.9" >&2
    echo "$HOME/.local/bin/uv"
}

PPML_PY="$(find_python)"
UV="$(find_uv "$PPML_PY")"
if [ ! -x .venv/bin/python ]; then
    echo "first run: creating .venv with $PPML_PY from uv.lock (downloads about 3 GB once) ..." >&2
fi
# --compile-bytecode: the dependencies' .pyc files are written once here; where PYTHONDONTWRITEBYTECODE
# is set (as on our CI machines), every role process would otherwise recompile torch, opacus and
# sympy from source at start (measured: about 9 s of each process's 11 s import)
"$UV" sync --frozen --quiet --compile-bytecode --python "$PPML_PY"
export PATH="$PWD/.venv/bin:$PATH"
