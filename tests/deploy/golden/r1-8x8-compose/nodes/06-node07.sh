#!/usr/bin/env bash
# node07: Ray worker joining node01 in the official vLLM image (run_cluster.sh equivalent)
# Rendered by `deepfleet render` from fleet.yaml; edit the config, not this file.
set -euo pipefail

HEAD_IP=10.0.0.1
NODE_IP=10.0.0.7
NIC=eth0
IMAGE=vllm/vllm-openai:v0.32.0
MODEL_DIR=/models
HF_CACHE=/root/.cache/huggingface

BUNDLE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
docker run \
    --detach \
    --name deepfleet-ray \
    --network host \
    --shm-size 64g \
    --gpus all \
    -v "${MODEL_DIR}:${MODEL_DIR}:ro" \
    -v "${HF_CACHE}:/root/.cache/huggingface" \
    -e "VLLM_HOST_IP=${NODE_IP}" \
    -e "GLOO_SOCKET_IFNAME=${NIC}" \
    -e "TP_SOCKET_IFNAME=${NIC}" \
    -e "NCCL_SOCKET_IFNAME=${NIC}" \
    -v "${BUNDLE_DIR}/secrets/ray_auth_token:/etc/deepfleet/ray_auth_token:ro" \
    -e RAY_AUTH_MODE=token \
    -e RAY_AUTH_TOKEN_PATH=/etc/deepfleet/ray_auth_token \
    --entrypoint /bin/bash \
    "${IMAGE}" \
    -c "ray start --block --address=${HEAD_IP}:6379 --node-ip-address=${NODE_IP} --metrics-export-port=8080"
