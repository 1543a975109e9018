#!/usr/bin/env bash
# node01: MindIE (deepseek-r1) over 2 node(s)
# Rendered by `deepfleet render` from fleet.yaml; edit the config, not this file.
set -euo pipefail

NODE_IP=172.16.0.101
IMAGE=swr.cn-southwest-2.myhuaweicloud.com/ei-mindie/mindie:2.0.T3-800I-A2-py311-openeuler24.03-lts

BUNDLE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# MindIE refuses a rank table that others may write.
chmod 640 "${BUNDLE_DIR}/rank_table.json"

docker run \
    --detach \
    --name deepfleet-engine \
    --network host \
    --shm-size 500g \
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
    -v "${BUNDLE_DIR}/rank_table.json:/etc/deepfleet/rank_table.json:ro" \
    -e "MIES_CONTAINER_IP=${NODE_IP}" \
    -e RANKTABLEFILE=/etc/deepfleet/rank_table.json \
    -e 'DEEPFLEET_MINDIE_CONFIG={"Version":"1.0.0","LogConfig":{"logLevel":"Info","logPath":"logs/mindie-server.log"},"ServerConfig":{"ipAddress":"172.16.0.101","port":8100,"allowAllZeroIpListening":false,"maxLinkNum":300,"httpsEnabled":false,"interCommTLSEnabled":false},"BackendConfig":{"backendName":"mindieservice_llm_engine","modelInstanceNumber":1,"npuDeviceIds":[[0,1,2,3,4,5,6,7]],"tokenizerProcessNumber":8,"multiNodesInferEnabled":true,"multiNodesInferPort":1120,"interNodeTLSEnabled":false,"ModelDeployConfig":{"maxSeqLen":16384,"maxInputTokenLen":16384,"truncation":false,"ModelConfig":[{"modelInstanceType":"Standard","modelName":"deepseek-r1","modelWeightPath":"/models/DeepSeek-R1-W8A8","worldSize":8,"cpuMemSize":5,"npuMemSize":-1,"backendType":"atb","trustRemoteCode":true}]},"ScheduleConfig":{"templateType":"Standard","templateName":"Standard_LLM","cacheBlockSize":128,"maxPrefillBatchSize":46,"maxPrefillTokens":16384,"prefillTimeMsPerReq":150,"prefillPolicyType":0,"decodeTimeMsPerReq":50,"decodePolicyType":0,"maxBatchSize":46,"maxIterTimes":16384,"maxPreemptCount":0,"supportSelectBatch":false,"maxQueueDelayMicroseconds":5000}}}' \
    -e MIES_CONFIG_JSON_PATH=/tmp/deepfleet-mindie-deepseek-r1-0.json \
    -e MINDIE_LOG_TO_STDOUT=1 \
    -e OMP_NUM_THREADS=1 \
    -e NPU_MEMORY_FRACTION=0.90 \
    -e WORLD_SIZE=16 \
    -e ATB_LLM_HCCL_ENABLE=1 \
    -e ATB_LLM_COMM_BACKEND=hccl \
    -e HCCL_CONNECT_TIMEOUT=7200 \
    -e HCCL_EXEC_TIMEOUT=0 \
    --entrypoint /bin/bash \
    "${IMAGE}" \
    -c 'source /usr/local/Ascend/ascend-toolkit/set_env.sh; source /usr/local/Ascend/nnal/atb/set_env.sh; source /usr/local/Ascend/atb-models/set_env.sh; source /usr/local/Ascend/mindie/set_env.sh; umask 027; printf "%s" "$DEEPFLEET_MINDIE_CONFIG" > "$MIES_CONFIG_JSON_PATH" && cd /usr/local/Ascend/mindie/latest/mindie-service && exec ./bin/mindieservice_daemon'
