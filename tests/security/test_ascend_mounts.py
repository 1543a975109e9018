"""Finding 15: the Ascend containers mounted hccn_tool, the driver folder and /etc/hccn.conf
writable, so code in the engine container (host networking, every NPU) could replace the
host's NPU tools or rewrite its NPU network config.

They must be mounted read-only, even when deploy.ascend.mounts lists them without a mode or
`rw`; the README must say why the containers use host networking."""

from __future__ import annotations

import pytest

from tests.deploy.conftest import CASES, render
from tests.security.bundles import mounts

HOST_PATHS = ("/usr/bin/hccn_tool", "/usr/local/Ascend/driver", "/etc/hccn.conf")


@pytest.mark.parametrize("engine", ["mindie", "vllm-ascend"])
def test_engine_container_cannot_rewrite_host_npu_tools_or_network_config(engine: str) -> None:
    data = CASES[f"ascend-2x8-{engine}"].data()
    data["deploy"].setdefault("ascend", {})["mounts"] = [
        "/usr/local/Ascend/driver:/usr/local/Ascend/driver",
        "/usr/bin/hccn_tool:/usr/bin/hccn_tool:rw",
        "/etc/hccn.conf:/etc/hccn.conf",
        "/var/log/npu/:/usr/slog",
    ]
    for case_data in (CASES[f"ascend-2x8-{engine}"].data(), data):
        bundle = render("ascend", case_data)
        runs = [rel for rel in bundle.files if rel.endswith("/run.sh")]
        assert len(runs) == 2
        for rel in runs:
            found = {m.split(":")[0].rstrip("/"): m for m in mounts(bundle.files[rel])}
            for host in HOST_PATHS:
                options = found[host].split(":")[2:]
                assert options and "ro" in options[0].split(","), f"{rel}: {found[host]}"
        assert "host networking" in bundle.files["README.md"].lower()
