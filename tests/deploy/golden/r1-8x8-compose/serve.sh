#!/usr/bin/env bash
# node01: start the engines inside the Ray head's container
# Rendered by `deepfleet render` from fleet.yaml; edit the config, not this file.
set -euo pipefail

docker exec deepfleet-ray ray status  # every node should be listed before the engines start
docker exec deepfleet-ray mkdir -p /var/log/deepfleet

# deepseek-r1 replica 0: port 8100, log /var/log/deepfleet/deepseek-r1-0.log
docker exec \
    --detach \
    -e VLLM_NO_USAGE_STATS=1 \
    -e DO_NOT_TRACK=1 \
    deepfleet-ray /bin/bash \
    -c 'exec python3 -m vllm.entrypoints.openai.api_server --model /models/deepseek-ai/DeepSeek-R1 --served-model-name deepseek-r1 --host 10.0.0.1 --port 8100 --enable-prefix-caching --disable-uvicorn-access-log --max-model-len 16384 --max-num-seqs 68 --tensor-parallel-size 8 --pipeline-parallel-size 4 --gpu-memory-utilization 0.920 --reasoning-parser deepseek_r1 --max-num-batched-tokens 8192 --distributed-executor-backend ray --enable-chunked-prefill >> /var/log/deepfleet/deepseek-r1-0.log 2>&1'
