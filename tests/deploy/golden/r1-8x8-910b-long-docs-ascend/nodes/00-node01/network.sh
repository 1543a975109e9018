#!/usr/bin/env bash
# node01: NPU network, one address per NPU
# Rendered by `deepfleet render` from fleet.yaml; edit the config, not this file.
set -euo pipefail

NETMASK=255.255.255.0
GATEWAY=10.197.90.254
TLS=0

hccn_tool -i 0 -ip -s address 10.197.90.10 netmask "${NETMASK}"
hccn_tool -i 0 -gateway -s gateway "${GATEWAY}"
hccn_tool -i 0 -netdetect -s address "${GATEWAY}"
hccn_tool -i 0 -tls -s enable "${TLS}"
hccn_tool -i 1 -ip -s address 10.197.90.11 netmask "${NETMASK}"
hccn_tool -i 1 -gateway -s gateway "${GATEWAY}"
hccn_tool -i 1 -netdetect -s address "${GATEWAY}"
hccn_tool -i 1 -tls -s enable "${TLS}"
hccn_tool -i 2 -ip -s address 10.197.90.12 netmask "${NETMASK}"
hccn_tool -i 2 -gateway -s gateway "${GATEWAY}"
hccn_tool -i 2 -netdetect -s address "${GATEWAY}"
hccn_tool -i 2 -tls -s enable "${TLS}"
hccn_tool -i 3 -ip -s address 10.197.90.13 netmask "${NETMASK}"
hccn_tool -i 3 -gateway -s gateway "${GATEWAY}"
hccn_tool -i 3 -netdetect -s address "${GATEWAY}"
hccn_tool -i 3 -tls -s enable "${TLS}"
hccn_tool -i 4 -ip -s address 10.197.90.14 netmask "${NETMASK}"
hccn_tool -i 4 -gateway -s gateway "${GATEWAY}"
hccn_tool -i 4 -netdetect -s address "${GATEWAY}"
hccn_tool -i 4 -tls -s enable "${TLS}"
hccn_tool -i 5 -ip -s address 10.197.90.15 netmask "${NETMASK}"
hccn_tool -i 5 -gateway -s gateway "${GATEWAY}"
hccn_tool -i 5 -netdetect -s address "${GATEWAY}"
hccn_tool -i 5 -tls -s enable "${TLS}"
hccn_tool -i 6 -ip -s address 10.197.90.16 netmask "${NETMASK}"
hccn_tool -i 6 -gateway -s gateway "${GATEWAY}"
hccn_tool -i 6 -netdetect -s address "${GATEWAY}"
hccn_tool -i 6 -tls -s enable "${TLS}"
hccn_tool -i 7 -ip -s address 10.197.90.17 netmask "${NETMASK}"
hccn_tool -i 7 -gateway -s gateway "${GATEWAY}"
hccn_tool -i 7 -netdetect -s address "${GATEWAY}"
hccn_tool -i 7 -tls -s enable "${TLS}"
