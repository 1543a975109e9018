#!/usr/bin/env bash
# Cluster mode on a machine with 2 GPUs (run by hand on the lent GPU machine; see the report):
# inside a loopback-only network namespace, two Ray nodes of one GPU each (deepfleet node
# start), one replica with pipeline_parallel_size=2 spanning them (vLLM's Ray executor in the
# replica's placement group), a chat request through the gateway, status, down, node stop.
# Usage: unshare --net bash tests/fleet/ray/gpu_pp2.sh MODEL_DIR OUT_DIR   (MODEL_DIR: config.json
# and tokenizer files; weights are dummy)
set -u
M=${1:?model folder}; OUT=${2:?output folder}
DF="python3 -m deepfleet"
T=$(mktemp -d /tmp/dfgXXXX)
# `ip link set lo up`, for machines without iproute2 (SIOCGIFFLAGS / SIOCSIFFLAGS, IFF_UP).
python3 -c "import fcntl, socket, struct; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
f = struct.unpack('16sH', fcntl.ioctl(s, 0x8913, struct.pack('16sH', b'lo', 0)))[1]
fcntl.ioctl(s, 0x8914, struct.pack('16sH', b'lo', f | 1))"
common=(--interface lo --token-file "$T/token" --num-gpus 1 --object-store-gib 1)
CUDA_VISIBLE_DEVICES=0 $DF node start --head --state-dir "$T/head" --temp-dir "$T/th" \
  --no-dashboard --node-ip 127.0.0.1 "${common[@]}" > "$OUT/node-head.txt" 2>&1
CUDA_VISIBLE_DEVICES=1 $DF node start --join 127.0.0.1:6379 --state-dir "$T/w1" --temp-dir "$T/tw" \
  --port-base 7000 --node-ip 127.0.0.2 "${common[@]}" > "$OUT/node-w1.txt" 2>&1
cat > "$T/fleet.yaml" <<YAML
cluster: {mode: ray, nodes: 2, devices_per_node: 1, device: H200, network: {interface: lo}}
models:
  - name: smol-pp2
    source: $M
    engine: vllm
    parallel: {tp: 1, pp: 2}
    max_model_len: 2048
    engine_args: {load_format: dummy, enforce_eager: true, gpu_memory_utilization: 0.3}
YAML
$DF up -f "$T/fleet.yaml" --state-dir "$T/head" --port 8000 > "$OUT/up.log" 2>&1 &
started=$(date +%s)
for _ in $(seq 1 120); do
  sleep 3
  $DF status --state-dir "$T/head" --json > "$OUT/status.json" 2>/dev/null
  python3 - "$OUT/status.json" <<'PY' && break
import json, sys
s = json.load(open(sys.argv[1]))
reps = s.get("replicas") or []
ok = reps and all(r["state"] == "ready" for r in reps)
failing = any(r["restarts"] >= 2 for r in reps)  # give up: the engine log says why
sys.exit(0 if failing or (ok and (s.get("gateway") or {}).get("state") == "ready") else 1)
PY
done
echo "ready after $(( $(date +%s) - started ))s" > "$OUT/timing.txt"
curl -s -m 60 http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \
  -d '{"model": "smol-pp2", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}' \
  > "$OUT/answer.json"
$DF status --state-dir "$T/head" > "$OUT/status.txt" 2>&1
$DF down --state-dir "$T/head" >> "$OUT/up.log" 2>&1
$DF node stop --state-dir "$T/w1"; $DF node stop --state-dir "$T/head"
tail -200 "$T/head/logs/smol-pp2-0.log" > "$OUT/engine.log" 2>/dev/null
