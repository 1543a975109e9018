"""What a running fleet exposes on this node: the doctor's security checks.

Three things an operator cannot see from the config alone, each reported with its fix:
- sockets the fleet's processes (from fleet.json, each checked by pid AND start time, and
  their children) listen on at a non-loopback address other than the gateway's own host;
- a Ray dashboard that answers its job API without a token (that API runs arbitrary code),
  probed at `cluster.dashboard_port` on loopback, on each of this node's other addresses (a
  dashboard started with --dashboard-host=0.0.0.0 answers there, and only there matters to
  other machines) and on the configured head (`cluster.head`);
- files and folders in the state dir that its group or others may read or enter (it holds
  the keys database, the engine key and the metrics token). Unix sockets are left out: who
  may connect is decided by the folders above them (KV events' sockets sit in the 0700 state
  dir), and their own mode comes from the umask of the engine that bound them.
"""

from __future__ import annotations

import ipaddress
import socket
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from deepfleet.fleet.doctor.checks import Finding
from deepfleet.fleet.process import same_process
from deepfleet.fleet.state import STATE_FILE, FleetState, read_state

RAY_DASHBOARD_PORT = 8265
RAY_DASHBOARD = f"http://127.0.0.1:{RAY_DASHBOARD_PORT}"
PROBE_TIMEOUT_S = 1.0


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
        if not (stat.S_ISLNK(mode) or stat.S_ISSOCK(mode)) and mode & 0o077:
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


def node_addresses() -> list[str]:
    """This node's addresses other than loopback and IPv6 link-local (IPv4 first)."""
    found: list[str] = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = ipaddress.ip_address(a.address.split("%", 1)[0])
            if not (ip.is_loopback or ip.is_link_local) and str(ip) not in found:
                found.append(str(ip))
    return sorted(found, key=lambda ip: ":" in ip)


def _host_of(head: str) -> str:
    """HOST of the config's `cluster.head` (HOST, HOST:PORT, [V6] or [V6]:PORT)."""
    if head.startswith("["):
        return head[1 : head.index("]")]
    return head.rsplit(":", 1)[0] if head.count(":") == 1 else head


def dashboard_urls(port: int = RAY_DASHBOARD_PORT, head: str | None = None) -> list[str]:
    """Where a Ray dashboard may answer: loopback, this node's other addresses, the head."""
    hosts = ["127.0.0.1", *node_addresses()]
    if head and _host_of(head) not in hosts:
        hosts.append(_host_of(head))
    return [f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}" for h in hosts]


def _job_api_status(url: str) -> int | None:
    try:
        return httpx.get(url + "/api/jobs/", timeout=PROBE_TIMEOUT_S).status_code
    except httpx.HTTPError:
        return None


def open_dashboard(url: str = RAY_DASHBOARD, node: str = "local") -> list[Finding]:
    """A Ray dashboard at `url` whose job API answers without a token."""
    return open_dashboards([url], node)


def open_dashboards(urls: Iterable[str], node: str = "local") -> list[Finding]:
    """One error per URL whose job API answers without a token (probed in parallel), else
    one ok naming those that want a token; nothing when no dashboard answers."""
    urls = list(urls)
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(urls)))) as pool:
        answers = dict(zip(urls, pool.map(_job_api_status, urls), strict=True))
    closed = [u for u, status in answers.items() if status in (401, 403)]
    found = [
        Finding(
            "error", node, "ray",
            f"the Ray dashboard at {url} answers its job API without a token "
            f"(HTTP {status}): anyone who reaches it runs code on the head",
            "start Ray with RAY_AUTH_MODE=token (deepfleet node start does), "
            "and keep --dashboard-host 127.0.0.1",
        )
        for url, status in answers.items()
        if status is not None and status not in (401, 403)
    ]  # fmt: skip
    if found or not closed:
        return found
    return [Finding("ok", node, "ray", f"the Ray dashboard at {', '.join(closed)} wants a token")]


def exposure_findings(
    state_dir: Path,
    gateway_host: str,
    gateway_port: int,
    node: str = "local",
    *,
    dashboard_port: int = RAY_DASHBOARD_PORT,
    ray_head: str | None = None,
) -> list[Finding]:
    return [
        *exposed_sockets(state_dir, gateway_host, gateway_port, node),
        *open_dashboards(dashboard_urls(dashboard_port, ray_head), node),
        *loose_files(state_dir, node),
    ]


__all__ = [
    "dashboard_urls",
    "exposed_sockets",
    "exposure_findings",
    "loose_files",
    "node_addresses",
    "open_dashboard",
    "open_dashboards",
]
