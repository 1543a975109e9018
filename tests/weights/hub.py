"""A real Hugging Face hub protocol server on loopback for the weights tests.

`olah` 0.5.4 (a self-hosted Hugging Face mirror) serves a local git repository offline
(`mirrors-path` in its config), LFS pointers and objects included, and its tree API gives each
file's size, git blob id and LFS sha256. Two limits of olah shape this fixture:
- in that mode it answers a Range request with the whole file (200), so a resumed download would
  get everything again;
- its caching proxy mode cannot sit in front of an offline mirror (its visibility check asks the
  upstream for the revision-less repo endpoint, which the offline mirror answers 401).
So nginx (Debian) fronts olah the way the real hub fronts its API with a CDN: GETs of LFS files
are served by nginx straight from the git repository's LFS store (Range honoured, 206), all else
(API, tree with sha256, HEAD with etag and commit, small files) by olah. nginx's access log
counts the body bytes sent to clients: what "the hub served". (nginx cannot apply Range to
olah's streamed, length-less answers, even from its proxy cache: tried.)
olah pins a newer fastapi than vLLM, so it lives in its own venv (scripts/setup-olah.sh).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

OLAH_VENV = Path(__file__).resolve().parents[2] / ".cache" / "olah-venv"
LFS_MIN = 1 << 20  # files this large go to LFS, as `git lfs track` would put weights


def olah_cli() -> Path | None:
    exe = OLAH_VENV / "bin" / "olah-cli"
    return exe if exe.is_file() else None


def make_git_repo(src: Path, dest: Path) -> None:
    """A git repository of the files in `src`, large ones as LFS pointers + objects."""
    dest.mkdir(parents=True)
    git = ["git", "-C", str(dest), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    for f in sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith(".")):
        data = f.read_bytes() if f.stat().st_size < LFS_MIN else None
        if data is not None:
            (dest / f.name).write_bytes(data)
            continue
        h = hashlib.sha256()
        with f.open("rb") as fh:
            while chunk := fh.read(8 << 20):
                h.update(chunk)
        oid = h.hexdigest()
        obj = dest / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
        obj.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, obj)
        size = f.stat().st_size
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
        (dest / f.name).write_text(pointer)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "model"], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"olah exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"olah did not listen on {port}")


@dataclass
class Hub:
    endpoint: str
    repo: str
    access_log: Path

    def served(self, uri_part: str = "") -> int:
        """Body bytes nginx sent to clients for GETs whose URI holds `uri_part`, so far."""
        total = 0
        if self.access_log.is_file():
            for line in self.access_log.read_text().splitlines():
                method, uri, _status, sent = line.split()
                total += int(sent) if method == "GET" and uri_part in uri else 0
        return total


NGINX_CONF = """\
{user}
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    log_format bytes '$request_method $uri $status $body_bytes_sent';
    access_log {work}/access.log bytes;
    client_body_temp_path {work}/nginx-tmp;
    proxy_temp_path {work}/nginx-tmp;
    map $request_method$uri $lfs_object {{
        default "";
{lfs_map}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            if ($lfs_object) {{ rewrite ^ /_lfs/$lfs_object last; }}
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
        location /_lfs/ {{
            internal;
            alias {objects}/;
            limit_rate {rate};
        }}
    }}
}}
"""


def _nginx(
    work: Path, port: int, upstream: int, git_repo: Path, repo: str, rate: str
) -> subprocess.Popen[bytes]:
    """nginx serving GETs of LFS files from the LFS store (as the hub's CDN does), the rest
    through olah."""
    objects = git_repo / ".git" / "lfs" / "objects"
    lfs_map = []
    for pointer in git_repo.iterdir():
        if pointer.is_file() and pointer.stat().st_size < 200:
            m = re.search(r"oid sha256:([0-9a-f]{64})", pointer.read_text(errors="replace"))
            if m:
                oid = m.group(1)
                uri = f"~^GET/{re.escape(repo)}/resolve/[^/]+/{re.escape(pointer.name)}$"
                lfs_map.append(f'        "{uri}" "{oid[:2]}/{oid[2:4]}/{oid}";')
    conf = work / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            # as root, workers would run as nobody and not read the 0700 pytest tmp dirs
            user="user root;" if os.geteuid() == 0 else "",
            work=work,
            port=port,
            upstream=upstream,
            objects=objects,
            rate=rate,
            lfs_map="\n".join(lfs_map),
        )
    )
    (work / "nginx-tmp").mkdir(exist_ok=True)
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    return subprocess.Popen(
        [exe, "-p", str(work), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=(work / "nginx.out").open("wb"),
    )


def _olah(
    basic: dict[str, str | int | list[str]], work: Path, name: str, offline: bool = False
) -> subprocess.Popen[bytes]:
    """Start olah-cli with a TOML config (mirrors-path exists only in the config file)."""
    exe = olah_cli()
    assert exe is not None
    port = basic["port"]
    basic = {
        "host": "127.0.0.1",
        "mirror-netloc": f"127.0.0.1:{port}",
        "mirror-lfs-netloc": f"127.0.0.1:{port}",
        "repos-path": str(work / f"{name}-repos"),
        **basic,
    }
    lines = ["[basic]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in basic.items()]
    lines += ["[accessibility]", f"offline = {str(offline).lower()}"]
    config = work / f"{name}.toml"
    config.write_text("\n".join(lines) + "\n")
    return subprocess.Popen(
        [str(exe), "-c", str(config)],
        cwd=work,
        stdout=(work / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("HF_")},
    )


@contextmanager
def serve(
    model_dir: Path, work: Path, repo: str = "deepfleet/SmolLM2-135M-Instruct", rate: str = "0"
) -> Iterator[Hub]:
    """Serve `model_dir` as `repo` at `Hub.endpoint` (nginx in front of an offline olah);
    `rate` caps each LFS download (nginx limit_rate, e.g. "100m"; "0": no cap)."""
    mirrors = work / "mirrors"
    make_git_repo(model_dir, mirrors / "models" / repo)
    olah_port, port = free_port(), free_port()
    procs = [_olah({"port": olah_port, "mirrors-path": [str(mirrors)]}, work, "olah", True)]
    try:
        _wait_port(olah_port, procs[0])
        procs.append(_nginx(work, port, olah_port, mirrors / "models" / repo, repo, rate))
        _wait_port(port, procs[1])
        yield Hub(f"http://127.0.0.1:{port}", repo, work / "access.log")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
