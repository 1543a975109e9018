#!/usr/bin/env bash
# The loopback Hugging Face hub of tests/weights: olah 0.5.4 in its own venv (it requires
# fastapi 0.165 and psutil 5.9, while vLLM pins fastapi<0.137, so it cannot share the project
# venv) and Debian's nginx (serves LFS files with Range, counts the bytes sent).
# Idempotent. Without them the hub tests skip with a reason naming this script.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/olah-venv
if [[ ! -x $venv/bin/olah-cli ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q olah==0.5.4
fi
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
  else
    echo "setup-olah: not root or no apt-get; nginx missing (the hub tests will skip)" >&2
  fi
fi
