#!/usr/bin/env bash
# node01: start vllm-ascend through Ray
# Rendered by `deepfleet render` from fleet.yaml; edit the config, not this file.
set -euo pipefail

docker exec deepfleet-engine ray status  # every node should be listed first

# deepseek-r1 replica 0: port 8100
docker exec \
    --detach \
    -e PYTORCH_NPU_ALLOC_CONF=expandable_segments:True \
    -e OMP_PROC_BIND=false \
    -e HCCL_CONNECT_TIMEOUT=1800 \
    -e VLLM_NO_USAGE_STATS=1 \
    -e DO_NOT_TRACK=1 \
    deepfleet-engine /bin/bash \
    -c 'exec python3 -m vllm.entrypoints.openai.api_server --model /models/DeepSeek-R1-W8A8 --served-model-name deepseek-r1 --host 0.0.0.0 --port 8100 --enable-prefix-caching --disable-uvicorn-access-log --max-model-len 32768 --max-num-seqs 256 --tensor-parallel-size 8 --pipeline-parallel-size 8 --gpu-memory-utilization 0.900 --reasoning-parser deepseek_r1 --max-num-batched-tokens 2048 --distributed-executor-backend ray --quantization ascend >> /tmp/deepseek-r1-0.log 2>&1'
