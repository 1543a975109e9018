#!/usr/bin/env bash
# Prepare the GPU runs of issues 11 (one H200) and 12 (x8 / x2 / x4 H200 machines), here (no
# GPU needed). Idempotent.
#
# Writes, in the repository root (each ignored through .git/info/exclude):
#   .gpu-wheels/  vLLM 0.26's wheel closure (shared/gpu/wheel_closure.py) and deepfleet's
#                 runtime dependencies that the device image lacks (python 3.12, manylinux)
#   .gpu0 ...     those wheels as one tar in equal chunks of at most GPU_CHUNK_MIB MiB, one
#                 device call each (.gpu0 also holds the tar's md5)
#   .gpu-extra/   wheels the closure misses or pins too low, installed over it on the device:
#                 opentelemetry-api (fastapi 0.165 imports it), apache-tvm-ffi>=0.1.11
#                 (xgrammar 0.2.9 refuses the 0.1.10 of the closure); carried with a work call
#   .gpu-models/  model folders of config.json + SmolLM2's tokenizer (weights are dummy):
#                 qwen2-7b (DeepSeek-R1-Distill-Qwen-7B's architecture), qwen2-1.5b, dsv3-8l,
#                 r1 (DeepSeek-R1's 61 layers, issue 12)
# The deepfleet package travels with the working tree (PYTHONPATH=src on the device).
# Usage: scripts/gpu/prepare.sh            (scripts/gpu/README.md: the device calls)
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${DEEPFLEET_SHARED:-../shared}
PY=${PYTHON:-.venv/bin/python}
CHUNK_MIB=${GPU_CHUNK_MIB:-56}
# deepfleet's runtime dependencies (pyproject.toml) and uvicorn[standard]'s that it uses.
DEPS=(pydantic pyyaml typer rich platformdirs psutil aiohttp starlette uvicorn
  prometheus-client msgspec pyzmq httptools uvloop)

exclude=.git/info/exclude
mkdir -p .git/info && touch "$exclude"
for rule in '/.gpu-wheels/' '/.gpu-models/' '/.gpu*/'; do
  grep -qxF "$rule" "$exclude" || echo "$rule" >>"$exclude"
done

# 1. Wheels: vLLM's closure first, so that its pins win; then what deepfleet adds.
if [[ ! -f .gpu-wheels/.complete ]]; then
  python3 "$SHARED/gpu/wheel_closure.py" .gpu-wheels
  python3 "$SHARED/gpu/wheel_closure.py" .gpu-wheels vllm==0.26.0 "${DEPS[@]}"
  touch .gpu-wheels/.complete
fi
norm() { tr 'A-Z_.' 'a-z--'; }
have=$(
  norm <"$SHARED/gpu/device-packages.txt"
  for w in .gpu-wheels/*.whl; do basename "$w" | cut -d- -f1 | norm; echo; done
)
for dep in "${DEPS[@]}" vllm fastapi transformers tokenizers; do
  grep -qx "$(echo "$dep" | norm)" <<<"$have" || { echo "missing wheel: $dep" >&2; exit 1; }
done
dups=$(for w in .gpu-wheels/*.whl; do basename "$w" | cut -d- -f1 | norm; echo; done | sort | uniq -d)
[[ -z "$dups" ]] || { echo "two versions of: $dups" >&2; exit 1; }

# 1b. Extras, found missing on the device (2026-11-29): installed over the closure there.
EXTRA=(opentelemetry-api 'apache-tvm-ffi>=0.1.11')
if ! compgen -G ".gpu-extra/opentelemetry_api-*.whl" >/dev/null ||
  ! compgen -G ".gpu-extra/apache_tvm_ffi-*.whl" >/dev/null; then
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .gpu-extra "${EXTRA[@]}"
fi

# 2. Chunks: equal parts p00, p01, ... in .gpu0, .gpu1, ...; rebuilt when the wheels change.
stamp=$( (ls -l .gpu-wheels/*.whl; echo "$CHUNK_MIB") | md5sum | cut -d' ' -f1)
if [[ "$(cat .gpu0/stamp 2>/dev/null)" != "$stamp" ]]; then
  rm -rf .gpu[0-9]*
  tmp=$(mktemp -d)
  tar cf "$tmp/wh.tar" -C .gpu-wheels --exclude=.complete .
  size=$(stat -c %s "$tmp/wh.tar")
  limit=$((CHUNK_MIB * 1024 * 1024))
  n=$(((size + limit - 1) / limit))
  split -n "$n" -d -a 2 "$tmp/wh.tar" "$tmp/p"
  i=0
  for p in "$tmp"/p*; do mkdir -p ".gpu$i"; mv "$p" ".gpu$i/"; i=$((i + 1)); done
  md5sum "$tmp/wh.tar" | cut -d' ' -f1 >.gpu0/wh.md5
  echo "$stamp" >.gpu0/stamp
  rm -rf "$tmp"
fi

# 3. Model folders (the bundled model supplies the tokenizer; prepared once, ~25 s).
"$PY" -m benchmarks.gpu.model_dirs .gpu-models

# 4. What each call carries.
tree=$( (git ls-files; git ls-files --others --exclude-standard) | sort -u |
  while read -r f; do [[ -f "$f" ]] && stat -c %s "$f"; done | awk '{s += $1} END {print s + 0}')
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "working tree (travels with every call): $(mib "$tree")"
for d in .gpu[0-9]* .gpu-models .gpu-extra; do
  s=$(du -sb "$d" | cut -f1)
  echo "call carrying $d: $(mib $((s + tree))) of 64 MiB"
  ((s + tree < 62 * 1024 * 1024)) || { echo "  over the limit: lower GPU_CHUNK_MIB" >&2; exit 1; }
done
chunks=(.gpu[0-9]*)
echo "chunk calls: ${#chunks[@]} (${chunks[*]}); md5 $(cat .gpu0/wh.md5)"
