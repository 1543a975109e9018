"""The rendered Prometheus config and rules: promtool accepts them, and promtool's rule unit
tests show each alert fires on its condition and stays quiet otherwise."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from deepfleet.observability.rules import rules_file
from deepfleet.observability.settings import MonitoringSettings, Slo

ENGINE = 'role="engine",job="deepfleet-engines",instance="h:8100",model="m",replica="m-0",node="n1"'
ENGINE_LABELS = {"role": "engine", "job": "deepfleet-engines", "instance": "h:8100",
                 "model": "m", "replica": "m-0", "node": "n1"}  # fmt: skip
RULE_LABELS = {"service": "deepfleet"}


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)


def test_promtool_checks_config_and_rules(rendered: Path, promtool: str) -> None:
    r = run(promtool, "check", "config", str(rendered / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout
    r = run(promtool, "check", "rules", str(rendered / "rules/deepfleet.rules.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def alert(name: str, at: str, severity: str | None = None, **labels: str) -> dict[str, Any]:
    """An expected alert at `at` (none firing when severity is None)."""
    exp = [] if severity is None else [{"exp_labels": {**labels, **RULE_LABELS,
                                                        "severity": severity}}]  # fmt: skip
    return {"eval_time": at, "alertname": name, "exp_alerts": exp}


# (input series, expected alerts), one case per alert; 15 s samples; `for` 1m (down) / 5m.
CASES: list[tuple[list[dict[str, str]], list[dict[str, Any]]]] = [
    ([{"series": f"up{{{ENGINE}}}", "values": "1 1 0x20"}],
     [alert("DeepfleetEngineDown", "45s"),
      alert("DeepfleetEngineDown", "2m", "critical", **ENGINE_LABELS)]),
    ([{"series": 'up{role="gateway",job="deepfleet-gateway",instance="g:8000",node="n1"}',
       "values": "0x20"}],
     [alert("DeepfleetGatewayDown", "2m", "critical", role="gateway", job="deepfleet-gateway",
            instance="g:8000", node="n1")]),
    ([{"series": 'deepfleet_ready_replicas{model="m",job="deepfleet-gateway"}', "values": "0x20"},
      {"series": 'deepfleet_ready_replicas{model="ok",job="deepfleet-gateway"}', "values": "1x20"}],
     [alert("DeepfleetModelNoReadyReplica", "2m", "critical", model="m")]),
    ([{"series": f"up{{{ENGINE}}}", "values": "0x20"}],
     [alert("DeepfleetModelNoReadyReplica", "2m", "critical", model="m")]),
    ([{"series": 'deepfleet_time_to_first_token_seconds_bucket{model="m",le="1"}',
       "values": "0+1x60"},
      {"series": 'deepfleet_time_to_first_token_seconds_bucket{model="m",le="5"}',
       "values": "0+10x60"},
      {"series": 'deepfleet_time_to_first_token_seconds_bucket{model="m",le="+Inf"}',
       "values": "0+10x60"},
      {"series": 'deepfleet_time_to_first_token_seconds_bucket{model="fast",le="1"}',
       "values": "0+10x60"},
      {"series": 'deepfleet_time_to_first_token_seconds_bucket{model="fast",le="+Inf"}',
       "values": "0+10x60"}],
     [alert("DeepfleetTTFTOverSLO", "4m"),
      alert("DeepfleetTTFTOverSLO", "12m", "warning", model="m")]),
    ([{"series": 'deepfleet_inter_token_latency_seconds_bucket{model="m",le="0.1"}',
       "values": "0+1x60"},
      {"series": 'deepfleet_inter_token_latency_seconds_bucket{model="m",le="0.5"}',
       "values": "0+10x60"},
      {"series": 'deepfleet_inter_token_latency_seconds_bucket{model="m",le="+Inf"}',
       "values": "0+10x60"}],
     [alert("DeepfleetITLOverSLO", "4m"),
      alert("DeepfleetITLOverSLO", "12m", "warning", model="m")]),
    ([{"series": f"vllm:kv_cache_usage_perc{{{ENGINE}}}", "values": "0.97x60"}],
     [alert("DeepfleetKVCacheFull", "3m"),
      alert("DeepfleetKVCacheFull", "7m", "warning", **ENGINE_LABELS)]),
    ([{"series": f"vllm:kv_cache_usage_perc{{{ENGINE}}}", "values": "0.9x60"}],
     [alert("DeepfleetKVCacheFull", "10m")]),
    ([{"series": f"vllm:num_requests_waiting{{{ENGINE}}}", "values": "1+1x80"}],
     [alert("DeepfleetEngineQueueGrowing", "15m", "warning", **ENGINE_LABELS)]),
    ([{"series": f"vllm:num_requests_waiting{{{ENGINE}}}", "values": "5x80"}],
     [alert("DeepfleetEngineQueueGrowing", "15m")]),
    ([{"series": 'deepfleet_admission_queue_depth{job="deepfleet-gateway"}', "values": "1+1x80"}],
     [alert("DeepfleetGatewayQueueGrowing", "15m", "warning", job="deepfleet-gateway")]),
    ([{"series": 'deepfleet_requests_total{model="m",status="200",key="a"}', "values": "0+10x60"},
      {"series": 'deepfleet_requests_total{model="m",status="503",key="a"}', "values": "0+5x60"},
      {"series": 'deepfleet_requests_total{model="ok",status="200",key="a"}', "values": "0+9x60"}],
     [alert("DeepfleetErrorRate", "12m", "warning", model="m")]),
    ([{"series": 'deepfleet_replica_restarts_total{replica="m-0",model="m",node="n1"}',
       "values": "0 1 2 3 3 3"}],
     [alert("DeepfleetReplicaFlapping", "1m", "warning", replica="m-0", model="m", node="n1")]),
    ([{"series": 'DCGM_FI_DEV_FB_USED{gpu="0",Hostname="n1"}', "values": "79000x40"},
      {"series": 'DCGM_FI_DEV_FB_FREE{gpu="0",Hostname="n1"}', "values": "1000x40"},
      {"series": 'DCGM_FI_DEV_FB_USED{gpu="1",Hostname="n1"}', "values": "72000x40"},
      {"series": 'DCGM_FI_DEV_FB_FREE{gpu="1",Hostname="n1"}', "values": "8000x40"}],
     [alert("DeepfleetGPUMemoryHigh", "7m", "warning", gpu="0", Hostname="n1")]),
    ([{"series": 'DCGM_FI_DEV_GPU_TEMP{gpu="3",Hostname="n2"}', "values": "90x40"},
      {"series": 'DCGM_FI_DEV_GPU_TEMP{gpu="4",Hostname="n2"}', "values": "70x40"}],
     [alert("DeepfleetGPUTemperatureHigh", "7m", "warning", gpu="3", Hostname="n2")]),
]  # fmt: skip


def test_every_alert_fires_on_its_condition(promtool: str, tmp_path: Path) -> None:
    settings = MonitoringSettings(gateway_url="http://g:8000", slos={"m": Slo(), "fast": Slo()})
    rules = rules_file(settings)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)  # templates are checked by `promtool check rules`
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": series, "alert_rule_test": alerts}
                  for series, alerts in CASES],
    }  # fmt: skip
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    r = run(promtool, "test", "rules", str(tmp_path / "tests.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    fired = {a["alertname"] for _, alerts in CASES for a in alerts if a["exp_alerts"]}
    assert fired == {rule["alert"] for rule in rules["groups"][1]["rules"]}
