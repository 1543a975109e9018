#!/usr/bin/env bash
# node02: check NPUs, links and addresses
# Rendered by `deepfleet render` from fleet.yaml; edit the config, not this file.
set -euo pipefail

failed=0

check_npu() {  # NPU index, planned address
    local link ip
    link="$(hccn_tool -i "$1" -link -g)"
    echo "NPU $1: ${link}"
    if ! grep -q "UP" <<<"${link}"; then
        echo "NPU $1: link is not UP" >&2
        failed=1
    fi
    ip="$(hccn_tool -i "$1" -ip -g)"
    if ! grep -qw -- "$2" <<<"${ip}"; then
        echo "NPU $1: address is not $2: ${ip}" >&2
        failed=1
    fi
}

ping_npu() {  # NPU index, address of the same NPU on another node
    if ! hccn_tool -i "$1" -ping -g address "$2"; then
        echo "NPU $1: no answer from $2" >&2
        failed=1
    fi
}

npu-smi info

check_npu 0 10.197.90.20
check_npu 1 10.197.90.21
check_npu 2 10.197.90.22
check_npu 3 10.197.90.23
check_npu 4 10.197.90.24
check_npu 5 10.197.90.25
check_npu 6 10.197.90.26
check_npu 7 10.197.90.27
# the same NPUs of node01
ping_npu 0 10.197.90.10
ping_npu 1 10.197.90.11
ping_npu 2 10.197.90.12
ping_npu 3 10.197.90.13
ping_npu 4 10.197.90.14
ping_npu 5 10.197.90.15
ping_npu 6 10.197.90.16
ping_npu 7 10.197.90.17
exit "${failed}"
