"""The environment the controller's children get: an allowlist, not the controller's own.

A controller started from a shell with cloud credentials, API keys or tokens in its
environment must not hand them to engines and Open-WebUI (their logs, crash dumps and
/proc/PID/environ). Children get the basics, the variables of the engines and their libraries,
and what the launch spec sets (which always wins).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

ALLOWED_NAMES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM",
        "TMPDIR", "TEMP", "TMP", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "LD_PRELOAD",
        "CUDA_HOME", "CUDA_PATH", "CC", "CXX", "SSL_CERT_FILE", "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
        "http_proxy", "https_proxy", "no_proxy", "PROMETHEUS_MULTIPROC_DIR",
    }
)  # fmt: skip
ALLOWED_PREFIXES = (
    "LC_", "XDG_", "PYTHON", "VLLM_", "CUDA_", "NCCL_", "GLOO_", "HF_", "HUGGINGFACE_HUB_",
    "TRANSFORMERS_", "TOKENIZERS_", "TORCH", "TRITON_", "OMP_", "KMP_", "MKL_", "ONEDNN_",
    "DNNL_", "NVIDIA_", "ROCM_", "HIP_", "ROCR_", "HSA_", "ASCEND_", "HCCL_", "ATB_",
    "MINDIE_", "LCCL_", "LMCACHE_", "SGLANG_", "SGL_", "RAY_", "UCX_", "FI_",
)  # fmt: skip


def allowed(name: str) -> bool:
    return name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES)


def child_environ(
    spec_env: Mapping[str, str], parent: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The allowed part of `parent` (default: our environment), then `spec_env` over it."""
    source = os.environ if parent is None else parent
    return {**{k: v for k, v in source.items() if allowed(k)}, **spec_env}
