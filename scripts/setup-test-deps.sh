#!/usr/bin/env bash
# What the end-to-end tests need beyond the project venv: Debian packages (Prometheus, the
# linter shellcheck, Chromium, Redis as the fleet's shared KV store, nginx for the loopback hub,
# PostgreSQL for the gateway's shared state, HAProxy in front of several gateways)
# and the Open-WebUI, olah and SGLang-parser environments.
# Idempotent; run by `make test`.
# Without root (or apt) the Debian part is skipped with a note, and the tests that need those
# tools skip with a reason that names this script.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v chromium >/dev/null || need+=(chromium)
command -v redis-server >/dev/null || need+=(redis-server)
# PostgreSQL: the gateway's shared state backend (tests/helpers/postgres.py starts a throwaway
# cluster from its binaries; the service itself is not needed).
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
# nginx: serves the loopback hub's LFS files with Range requests (tests/weights).
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
# HAProxy: in front of several gateways (gateway.instances, `render lb`; tests/fleet/test_lb.py).
command -v haproxy >/dev/null || need+=(haproxy)
if ((${#need[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "setup-test-deps: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "setup-test-deps: not root or no apt-get; missing ${need[*]} (their tests will skip)" >&2
  fi
fi
# SGLang's own argument parser, to check the commands deepfleet builds for it (tests/engines).
# --no-deps into its own folder: SGLang's requirements would replace the torch vLLM pins.
VENV=${DEEPFLEET_VENV:-.venv}
# The PostgreSQL driver (a core dependency in pyproject.toml) in a venv made before it was one.
"$VENV/bin/python" -c "import psycopg, psycopg_pool" 2>/dev/null ||
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "psycopg[binary]>=3.2" "psycopg-pool>=3.2"
if [[ ! -f .cache/sglang/.done ]]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --target .cache/sglang \
    sglang==0.5.23 orjson==3.13.0 ipython==9.19.1 traitlets==5.16.1 && touch .cache/sglang/.done
fi
# The bundled model's Hugging Face folder (its tokenizer is read at collection time by the
# routing, KV and migration tests; without it they would skip). Idempotent: seconds once done.
"$VENV/bin/deepfleet" models prepare bundled
# The loopback Hugging Face hub (olah in its own venv) of tests/weights.
scripts/setup-olah.sh
if [[ -x scripts/setup-webui.sh ]]; then
  scripts/setup-webui.sh
fi
