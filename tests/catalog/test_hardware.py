"""Hardware catalog: names, aliases and the facts the planner relies on."""

from __future__ import annotations

import pytest

from deepfleet.catalog.hardware import DEVICES, GiB, UnknownDeviceError, get_device


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("a100-40gb", "A100-40GB"),
        ("H200", "H200"),
        ("h100-sxm", "H100"),
        ("4090", "RTX-4090"),
        ("RTX 4090", "RTX-4090"),
        ("910B", "Ascend-910B"),
        ("ascend_910b", "Ascend-910B"),
        ("cpu", "CPU"),
    ],
)
def test_names_and_aliases(spelling: str, name: str) -> None:
    assert get_device(spelling).name == name


def test_unknown_device_lists_the_catalog() -> None:
    with pytest.raises(UnknownDeviceError, match=r"A100-40GB.*Ascend-910B"):
        get_device("TPU-v5")


def test_catalog_covers_the_issue_list() -> None:
    wanted = {"A100-40GB", "A100-80GB", "H100", "H200", "H800", "H20", "L40S", "RTX-4090"}
    assert wanted | {"Ascend-910B", "CPU"} == set(DEVICES)


@pytest.mark.parametrize(
    ("name", "fp8", "nominal_gib", "engine"),
    [
        ("A100-40GB", False, 40, "vllm"),  # Ampere: no FP8 tensor cores
        ("A100-80GB", False, 80, "vllm"),
        ("H100", True, 80, "vllm"),
        ("H200", True, 141, "vllm"),
        ("L40S", True, 48, "vllm"),  # Ada has FP8
        ("RTX-4090", True, 24, "vllm"),
        ("Ascend-910B", False, 64, "vllm-ascend"),
    ],
)
def test_device_facts(name: str, fp8: bool, nominal_gib: int, engine: str) -> None:
    d = get_device(name)
    assert d.fp8 is fp8 and d.engine == engine
    # Sizes are binary (40 GB HBM = 40 GiB); the runtime sees less (ECC, driver).
    assert 0.9 * nominal_gib < d.memory_bytes / GiB <= nominal_gib
    assert d.bandwidth > 0 and d.bf16_flops > 0


def test_h200_total_is_the_measured_one() -> None:
    # torch.cuda.get_device_properties(0).total_memory on the lent H200.
    assert get_device("H200").memory_bytes == 150_109_880_320
    assert 139 < get_device("H200").memory_bytes / GiB < 140
