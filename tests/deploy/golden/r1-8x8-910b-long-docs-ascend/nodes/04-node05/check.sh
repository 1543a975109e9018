#!/usr/bin/env bash
# node05: check NPUs, links and addresses
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

check_npu 0 10.197.90.50
check_npu 1 10.197.90.51
check_npu 2 10.197.90.52
check_npu 3 10.197.90.53
check_npu 4 10.197.90.54
check_npu 5 10.197.90.55
check_npu 6 10.197.90.56
check_npu 7 10.197.90.57
# the same NPUs of node01
ping_npu 0 10.197.90.10
ping_npu 1 10.197.90.11
ping_npu 2 10.197.90.12
ping_npu 3 10.197.90.13
ping_npu 4 10.197.90.14
ping_npu 5 10.197.90.15
ping_npu 6 10.197.90.16
ping_npu 7 10.197.90.17
# the same NPUs of node02
ping_npu 0 10.197.90.20
ping_npu 1 10.197.90.21
ping_npu 2 10.197.90.22
ping_npu 3 10.197.90.23
ping_npu 4 10.197.90.24
ping_npu 5 10.197.90.25
ping_npu 6 10.197.90.26
ping_npu 7 10.197.90.27
# the same NPUs of node03
ping_npu 0 10.197.90.30
ping_npu 1 10.197.90.31
ping_npu 2 10.197.90.32
ping_npu 3 10.197.90.33
ping_npu 4 10.197.90.34
ping_npu 5 10.197.90.35
ping_npu 6 10.197.90.36
ping_npu 7 10.197.90.37
# the same NPUs of node04
ping_npu 0 10.197.90.40
ping_npu 1 10.197.90.41
ping_npu 2 10.197.90.42
ping_npu 3 10.197.90.43
ping_npu 4 10.197.90.44
ping_npu 5 10.197.90.45
ping_npu 6 10.197.90.46
ping_npu 7 10.197.90.47
# the same NPUs of node06
ping_npu 0 10.197.90.60
ping_npu 1 10.197.90.61
ping_npu 2 10.197.90.62
ping_npu 3 10.197.90.63
ping_npu 4 10.197.90.64
ping_npu 5 10.197.90.65
ping_npu 6 10.197.90.66
ping_npu 7 10.197.90.67
# the same NPUs of node07
ping_npu 0 10.197.90.70
ping_npu 1 10.197.90.71
ping_npu 2 10.197.90.72
ping_npu 3 10.197.90.73
ping_npu 4 10.197.90.74
ping_npu 5 10.197.90.75
ping_npu 6 10.197.90.76
ping_npu 7 10.197.90.77
# the same NPUs of node08
ping_npu 0 10.197.90.80
ping_npu 1 10.197.90.81
ping_npu 2 10.197.90.82
ping_npu 3 10.197.90.83
ping_npu 4 10.197.90.84
ping_npu 5 10.197.90.85
ping_npu 6 10.197.90.86
ping_npu 7 10.197.90.87
exit "${failed}"
