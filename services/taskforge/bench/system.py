"""What ``taskforge bench --embedded`` runs and measures: the whole system (``taskforge dev``
in a child process) and the CPU time and peak RSS of each deployable."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

DEPLOYABLES = ("api", "scheduler", "worker", "reaper")


class EmbeddedSystem:
    """``taskforge dev`` on fresh embedded stores (or the TASKFORGE_*_URL servers)."""

    def __init__(self, workers: int = 1, apis: int = 1) -> None:
        self.workers = workers
        self.apis = apis
        self.data_dir = Path(tempfile.mkdtemp(prefix="taskforge-bench-"))
        self.http_port = random.randint(20000, 29000)
        self.ops_base = self.http_port + 1000
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def postgres_url(self) -> str:
        configured = os.environ.get("TASKFORGE_POSTGRES_URL")
        if configured:
            return configured
        return f"postgresql://postgres:@/taskforge?host={(self.data_dir / 'postgres').resolve()}"

    def start(self, timeout: float = 120.0) -> None:
        env = {
            **os.environ,
            "TASKFORGE_HTTP_PORT": str(self.http_port),
            "TASKFORGE_OPS_PORT": str(self.ops_base),
            "TASKFORGE_LOG_LEVEL": os.environ.get("TASKFORGE_LOG_LEVEL", "warning"),
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "taskforge",
                "dev",
                "--workers",
                str(self.workers),
                "--api",
                str(self.apis),
                "--data-dir",
                str(self.data_dir),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(self.data_dir / "dev.log").open("wb"),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                # stop() removes data_dir, so the log's end goes into the message itself.
                raise RuntimeError(f"taskforge dev exited with {code}:\n{self.log_tail()}")
            # api(s), scheduler, workers and reaper, each on its own ops port from ops_base.
            expected = self.apis + self.workers + 2
            running = [name for name in self.pids() if name != "redis"]
            if len(running) >= expected and all(
                self._ready(self.ops_base + i) for i in range(expected)
            ):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the system did not become ready in {timeout:.0f}s")

    def log_tail(self, lines: int = 12) -> str:
        """The last lines ``taskforge dev`` and its children wrote to stderr."""
        try:
            text = (self.data_dir / "dev.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"

    def _ready(self, port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def pids(self) -> dict[str, int]:
        """Deployable name → pid (workers numbered), plus the embedded redis-server."""
        if self.process is None:
            return {}
        found: dict[str, int] = {}
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            return {}
        counts: dict[str, int] = {}
        for child in children:
            try:
                cmdline = child.cmdline()
            except psutil.Error:
                continue
            if cmdline and cmdline[-1] in DEPLOYABLES and "taskforge" in " ".join(cmdline):
                name = cmdline[-1]
                if name in ("worker", "api"):
                    counts[name] = counts.get(name, 0) + 1
                    name = f"{name}-{counts[name]}"
                found[name] = child.pid
            elif cmdline and "redis-server" in cmdline[0]:
                found["redis"] = child.pid
        return found

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class ProcessSampler:
    """CPU seconds used during a run and peak RSS, per named process; also the PostgreSQL
    servers on this machine (all their backends) and the load generator itself, so that a
    run's CPU budget per job can be read off whole."""

    def __init__(self, pids: dict[str, int] | None) -> None:
        self.pids = pids if pids is not None else _find_deployables()
        self._cpu: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        cpu = {name: _cpu(pid) for name, pid in self.pids.items()}
        cpu["postgres"] = _postgres_cpu()
        cpu["bench"] = _cpu(os.getpid())
        return cpu

    def start(self) -> None:
        self._cpu = self._sample()

    def stop(self) -> dict[str, dict[str, float]]:
        usage = {}
        for name, cpu in self._sample().items():
            pid = self.pids.get(name, os.getpid() if name == "bench" else None)
            usage[name] = {
                "cpu_seconds": round(cpu - self._cpu.get(name, 0.0), 2),
                "peak_rss_mb": round(_peak_rss(pid) / 2**20, 1) if pid else 0.0,
            }
        return usage


def _postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL server here: each postmaster with the backends it has
    reaped (children times) and those still running."""
    total = 0.0
    for process in psutil.process_iter(["name", "ppid"]):
        if process.info.get("name") != "postgres":
            continue
        try:
            times = process.cpu_times()
            total += times.user + times.system
            parent = psutil.Process(process.info["ppid"])
            if parent.name() != "postgres":  # the postmaster: add its reaped backends
                total += times.children_user + times.children_system
        except psutil.Error:
            continue
    return total


def _find_deployables() -> dict[str, int]:
    """Deployables running on this machine (for a bench against an already running system)."""
    found: dict[str, int] = {}
    counts: dict[str, int] = {}
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if cmdline and cmdline[-1] in DEPLOYABLES and "taskforge" in " ".join(cmdline):
            counts[cmdline[-1]] = counts.get(cmdline[-1], 0) + 1
            found[f"{cmdline[-1]}-{counts[cmdline[-1]]}"] = process.pid
    return found


def _cpu(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def _peak_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0
