#!/usr/bin/env bash
# Create or update .venv-webui with Open-WebUI for `deepfleet up --ui`. Idempotent: a stamp
# holding the hash of this script makes a second run take about a second.
#
# Open-WebUI pins its own transformers and sentence-transformers, so it cannot share .venv; it
# runs as a separate process and deepfleet only needs its `open-webui` command. CPU torch goes in
# first (pip takes torch==2.13.0+cpu from this machine's wheel folder; elsewhere set
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu), else pip pulls a 6 GB CUDA torch.
# About 3 minutes and 2.9 GB on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DEEPFLEET_WEBUI_VENV:-.venv-webui}
PY=${PYTHON:-python3}
stamp="$VENV/.deepfleet-webui-stamp"
want=$(sha256sum scripts/setup-webui.sh | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$VENV/bin/open-webui" ]]; then
  exit 0
fi
echo "deepfleet: setting up $VENV with Open-WebUI (first run takes about 3 minutes)" >&2
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }
pip install -q --upgrade pip
pip install -q "torch==2.13.0" "open-webui==0.12.4"
echo "$want" >"$stamp"
echo "deepfleet: $VENV ready ($VENV/bin/open-webui)" >&2
