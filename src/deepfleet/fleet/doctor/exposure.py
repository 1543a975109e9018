"""What a running fleet exposes on this node: the doctor's security checks.

Three things an operator cannot see from the config alone, each reported with its fix:
- sockets the fleet's processes (from fleet.json, each checked by pid AND start time, and
  their children) listen on at a non-loopback address other than the gateway's own host;
- a Ray dashboard on this node that answers its job API without a token (that API runs
  arbitrary code);
- files and folders in the state dir that its group or others may read or enter (it holds
  the keys database, the engine key and the metrics token).
"""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import httpx
import psutil

from deepfleet.fleet.doctor.checks import Finding
from deepfleet.fleet.process import same_process
from deepfleet.fleet.state import STATE_FILE, FleetState, read_state

RAY_DASHBOARD = "http://127.0.0.1:8265"


def loose_files(state_dir: Path, node: str = "local") -> list[Finding]:
    """Entries of the state dir (itself included) with any group or other permission bit."""
    if not state_dir.is_dir():
        return []
    loose = []
    for path in [state_dir, *sorted(state_dir.rglob("*"))]:
        try:
            mode = path.lstat().st_mode
        except OSError:
            continue
        if not stat.S_ISLNK(mode) and mode & 0o077:
            loose.append(f"{path} ({stat.S_IMODE(mode):o})")
    if not loose:
        return [Finding("ok", node, "files", f"{state_dir} is private to its owner")]
    shown = ", ".join(loose[:5]) + (f" and {len(loose) - 5} more" if len(loose) > 5 else "")
    return [
        Finding(
            "warn", node, "files", f"readable or enterable by others: {shown}",
            f"chmod -R go-rwx {state_dir}",
        )
    ]  # fmt: skip


def _fleet_pids(state: FleetState) -> set[int]:
    recorded = [(state.controller_pid, state.controller_start)]
    recorded += [(r.pid, r.pid_start) for r in [*state.replicas, *state.services] if r.pid]
    if state.gateway is not None and state.gateway.pid:
        recorded.append((state.gateway.pid, state.gateway.pid_start))
    pids: set[int] = set()
    for pid, start in recorded:
        if pid and same_process(pid, start):
            pids.add(pid)
            try:
                pids |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
            except psutil.NoSuchProcess:
                continue
    return pids


def _public(ip: str) -> bool:
    try:
        return not ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback
    except ValueError:
        return True


def exposed_sockets(
    state_dir: Path, gateway_host: str, gateway_port: int, node: str = "local"
) -> list[Finding]:
    """Listening sockets of the fleet's processes on non-loopback addresses, but the
    gateway's configured one."""
    state = read_state(state_dir / STATE_FILE)
    if state is None:
        return []
    pids = _fleet_pids(state)
    try:
        conns = psutil.net_connections(kind="inet")
    except psutil.AccessDenied:
        return [Finding("warn", node, "exposed", "cannot list this node's sockets (no access)")]
    found = []
    for c in conns:
        if c.status != psutil.CONN_LISTEN or c.pid not in pids or not c.laddr:
            continue
        ip, port = c.laddr.ip, c.laddr.port
        if not _public(ip) or (port == gateway_port and ip in (gateway_host, "0.0.0.0", "::")):
            continue
        found.append(
            Finding(
                "warn", node, "exposed",
                f"pid {c.pid} listens on {ip}:{port}, reachable from other machines",
                f"bind it to 127.0.0.1, or firewall port {port} to the fleet's nodes",
            )
        )  # fmt: skip
    return found or [Finding("ok", node, "exposed", "the fleet listens on loopback only")]


def open_dashboard(url: str = RAY_DASHBOARD, node: str = "local") -> list[Finding]:
    """A Ray dashboard whose job API answers without a token."""
    try:
        r = httpx.get(url + "/api/jobs/", timeout=1.0)
    except httpx.HTTPError:
        return []
    if r.status_code in (401, 403):
        return [Finding("ok", node, "ray", f"the Ray dashboard at {url} wants a token")]
    return [
        Finding(
            "error", node, "ray",
            f"the Ray dashboard at {url} answers its job API without a token "
            f"(HTTP {r.status_code}): anyone who reaches it runs code on the head",
            "start Ray with RAY_AUTH_MODE=token (deepfleet node start does), "
            "and keep --dashboard-host 127.0.0.1",
        )
    ]  # fmt: skip


def exposure_findings(
    state_dir: Path, gateway_host: str, gateway_port: int, node: str = "local"
) -> list[Finding]:
    return [
        *exposed_sockets(state_dir, gateway_host, gateway_port, node),
        *open_dashboard(node=node),
        *loose_files(state_dir, node),
    ]


__all__ = ["exposed_sockets", "exposure_findings", "loose_files", "open_dashboard"]
