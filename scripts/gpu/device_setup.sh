#!/usr/bin/env bash
# shellcheck shell=bash
# Source this on the lent GPU machine, in the repository root, at the start of a work call:
#   source scripts/gpu/device_setup.sh || exit 1
# It gathers the wheel chunks (the earlier chunk calls left them in /tmp/wh; a chunk carried in
# this call is added), checks the md5 that prepare.sh wrote, installs the wheels once per
# machine into /tmp/site, and exports PYTHONPATH (wheels, deepfleet's src, the repo root), PATH
# and the settings every GPU process needs.
mkdir -p /tmp/wh
for d in .gpu[0-9]*; do
  [[ -d "$d" ]] && cp "$d"/* /tmp/wh/
done
if [[ ! -f /tmp/site/.deepfleet-installed ]]; then
  parts=(/tmp/wh/p[0-9]*)
  echo "device_setup: ${#parts[@]} wheel chunks in /tmp/wh"
  cat "${parts[@]}" >/tmp/wh.tar
  if [[ -f /tmp/wh/wh.md5 && "$(md5sum </tmp/wh.tar | cut -d' ' -f1)" != "$(cat /tmp/wh/wh.md5)" ]]; then
    echo "device_setup: wheel chunks incomplete or damaged (md5 mismatch): ${parts[*]}" >&2
    return 1
  fi
  rm -rf /tmp/w && mkdir -p /tmp/w && tar xf /tmp/wh.tar -C /tmp/w && rm -f /tmp/wh.tar
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/w/*.whl ||
    { echo "device_setup: pip install failed" >&2; return 1; }
  touch /tmp/site/.deepfleet-installed
fi
# .gpu-extra (prepare.sh 1b): wheels the closure lacks or pins too low, ahead of /tmp/site.
if compgen -G ".gpu-extra/*.whl" >/dev/null && [[ ! -f /tmp/site-extra/.deepfleet-installed ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-extra .gpu-extra/*.whl ||
    { echo "device_setup: pip install of .gpu-extra failed" >&2; return 1; }
  touch /tmp/site-extra/.deepfleet-installed
fi
[[ -f /tmp/site-extra/.deepfleet-installed ]] ||
  { echo "device_setup: carry .gpu-extra in this call (scripts/gpu/prepare.sh makes it)" >&2; return 1; }
export PYTHONPATH="/tmp/site-extra:/tmp/site:$PWD/src:$PWD" PATH="/tmp/site/bin:$PATH"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
python3 -c "import importlib.util as u; assert u.find_spec('vllm') and u.find_spec('deepfleet')" ||
  { echo "device_setup: vllm or deepfleet does not import" >&2; return 1; }
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader || true
