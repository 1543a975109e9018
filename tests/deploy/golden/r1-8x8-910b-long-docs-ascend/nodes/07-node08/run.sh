#!/usr/bin/env bash
# node08: Ray node joining node01
# Rendered by `deepfleet render` from fleet.yaml; edit the config, not this file.
set -euo pipefail

HEAD_IP=172.16.0.101
NODE_IP=172.16.0.108
IMAGE=quay.io/ascend/vllm-ascend:v0.11.0rc0

BUNDLE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
docker run \
    --detach \
    --name deepfleet-engine \
    --network host \
    --shm-size 64g \
    --device=/dev/davinci0 \
    --device=/dev/davinci1 \
    --device=/dev/davinci2 \
    --device=/dev/davinci3 \
    --device=/dev/davinci4 \
    --device=/dev/davinci5 \
    --device=/dev/davinci6 \
    --device=/dev/davinci7 \
    --device=/dev/davinci_manager \
    --device=/dev/hisi_hdc \
    --device=/dev/devmm_svm \
    -v /usr/local/dcmi:/usr/local/dcmi:ro \
    -v /usr/bin/hccn_tool:/usr/bin/hccn_tool:ro \
    -v /usr/local/sbin/npu-smi:/usr/local/sbin/npu-smi:ro \
    -v /usr/local/Ascend/driver:/usr/local/Ascend/driver:ro \
    -v /usr/local/Ascend/firmware:/usr/local/Ascend/firmware:ro \
    -v /etc/hccn.conf:/etc/hccn.conf:ro \
    -v /var/log/npu/:/usr/slog \
    -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
    -v /models:/models:ro \
    -e "HCCL_IF_IP=${NODE_IP}" \
    -e "VLLM_HOST_IP=${NODE_IP}" \
    -e PYTORCH_NPU_ALLOC_CONF=expandable_segments:True \
    -e OMP_PROC_BIND=false \
    -e HCCL_CONNECT_TIMEOUT=1800 \
    -e VLLM_NO_USAGE_STATS=1 \
    -e DO_NOT_TRACK=1 \
    -v "${BUNDLE_DIR}/secrets/ray_auth_token:/etc/deepfleet/ray_auth_token:ro" \
    -e RAY_AUTH_MODE=token \
    -e RAY_AUTH_TOKEN_PATH=/etc/deepfleet/ray_auth_token \
    --entrypoint /bin/bash \
    "${IMAGE}" \
    -c "ray start --block --address=${HEAD_IP}:6379 --node-ip-address=${NODE_IP} --resources='{\"NPU\": 8}'"
