#!/usr/bin/env bash
# node01: start vllm-ascend through Ray
# Rendered by `deepfleet render` from fleet.yaml; edit the config, not this file.
set -euo pipefail

docker exec deepfleet-engine ray status  # every node should be listed first

# r1-distill-7b-prefill replica 0: port 8100
docker exec \
    --detach \
    -e PYTORCH_NPU_ALLOC_CONF=expandable_segments:True \
    -e OMP_PROC_BIND=false \
    -e HCCL_CONNECT_TIMEOUT=1800 \
    -e VLLM_NO_USAGE_STATS=1 \
    -e DO_NOT_TRACK=1 \
    deepfleet-engine /bin/bash \
    -c 'exec python3 -m vllm.entrypoints.openai.api_server --model /models/deepseek-ai/DeepSeek-R1-Distill-Qwen-7B --served-model-name r1-distill-7b --host 0.0.0.0 --port 8100 --enable-prefix-caching --disable-uvicorn-access-log --max-model-len 16384 --max-num-seqs 226 --tensor-parallel-size 2 --gpu-memory-utilization 0.900 --reasoning-parser deepseek_r1 --max-num-batched-tokens 2048 --distributed-executor-backend ray --kv-transfer-config '"'"'{"kv_connector":"MooncakeConnectorV1","kv_role":"kv_producer","kv_port":36000,"engine_id":"0","kv_connector_extra_config":{"use_ascend_direct":true,"prefill":{"dp_size":1,"tp_size":2},"decode":{"dp_size":1,"tp_size":4}}}'"'"' >> /tmp/r1-distill-7b-prefill-0.log 2>&1'

# r1-distill-7b-prefill replica 1: port 8101
docker exec \
    --detach \
    -e PYTORCH_NPU_ALLOC_CONF=expandable_segments:True \
    -e OMP_PROC_BIND=false \
    -e HCCL_CONNECT_TIMEOUT=1800 \
    -e VLLM_NO_USAGE_STATS=1 \
    -e DO_NOT_TRACK=1 \
    deepfleet-engine /bin/bash \
    -c 'exec python3 -m vllm.entrypoints.openai.api_server --model /models/deepseek-ai/DeepSeek-R1-Distill-Qwen-7B --served-model-name r1-distill-7b --host 0.0.0.0 --port 8101 --enable-prefix-caching --disable-uvicorn-access-log --max-model-len 16384 --max-num-seqs 226 --tensor-parallel-size 2 --gpu-memory-utilization 0.900 --reasoning-parser deepseek_r1 --max-num-batched-tokens 2048 --distributed-executor-backend ray --kv-transfer-config '"'"'{"kv_connector":"MooncakeConnectorV1","kv_role":"kv_producer","kv_port":36002,"engine_id":"1","kv_connector_extra_config":{"use_ascend_direct":true,"prefill":{"dp_size":1,"tp_size":2},"decode":{"dp_size":1,"tp_size":4}}}'"'"' >> /tmp/r1-distill-7b-prefill-1.log 2>&1'

# r1-distill-7b-decode replica 0: port 8102
docker exec \
    --detach \
    -e PYTORCH_NPU_ALLOC_CONF=expandable_segments:True \
    -e OMP_PROC_BIND=false \
    -e HCCL_CONNECT_TIMEOUT=1800 \
    -e VLLM_NO_USAGE_STATS=1 \
    -e DO_NOT_TRACK=1 \
    deepfleet-engine /bin/bash \
    -c 'exec python3 -m vllm.entrypoints.openai.api_server --model /models/deepseek-ai/DeepSeek-R1-Distill-Qwen-7B --served-model-name r1-distill-7b --host 0.0.0.0 --port 8102 --enable-prefix-caching --disable-uvicorn-access-log --max-model-len 16384 --max-num-seqs 256 --tensor-parallel-size 4 --gpu-memory-utilization 0.900 --reasoning-parser deepseek_r1 --max-num-batched-tokens 2048 --distributed-executor-backend ray --kv-transfer-config '"'"'{"kv_connector":"MooncakeConnectorV1","kv_role":"kv_consumer","kv_load_failure_policy":"recompute","kv_port":36004,"engine_id":"2","kv_connector_extra_config":{"use_ascend_direct":true,"prefill":{"dp_size":1,"tp_size":2},"decode":{"dp_size":1,"tp_size":4}}}'"'"' >> /tmp/r1-distill-7b-decode-0.log 2>&1'
