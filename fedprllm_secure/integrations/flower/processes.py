"""The processes of a local Flower deployment: a SuperLink and SuperNodes this module starts,
each in its own process group, stopped by PID (`Deployment`); bounded waits; log reasons.

`deploy` submits runs on them (`submit_run`, `run_deployment`, `run_simulation_engine`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import FedPrError, one_line


class DeploymentError(FedPrError):
    """The deployment could not start, finish in time, or the run failed (a one-line message)."""


# A SuperNode gives up on an unreachable SuperLink after this many tries / seconds.
NODE_MAX_RETRIES = 3
NODE_MAX_WAIT_S = 20


def log_reason(text: str) -> str:
    """A log's last ERROR paragraph (Flower prints its exit code and reason there) on one line,
    else its last non-empty line; without ANSI colours."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in text.splitlines()]
    errors = [i for i, line in enumerate(lines) if line.startswith("ERROR")]
    if errors:
        paragraph = []
        for line in lines[errors[-1] :]:
            if not line:
                break
            paragraph.append(line)
        return one_line(" ".join(paragraph))
    rest = [line for line in lines if line]
    return rest[-1] if rest else "(empty log)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def group_gone(pgid: int, timeout: float = 0.0) -> bool:
    """Whether no process is left in group `pgid`, waiting up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live process (Linux /proc, else `ps`)."""
    table: dict[int, int] = {}
    proc = Path("/proc")
    if (proc / "self" / "stat").is_file():
        for entry in proc.iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                table[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        return table
    try:
        listing = subprocess.run(
            ["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return table
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) == 2 and all(f.isdigit() for f in fields):
            table[int(fields[0])] = int(fields[1])
    return table


def process_groups(pid: int) -> set[int]:
    """The process group `pid` leads and those of its live descendants. Flower starts its
    SuperExec (and through it the ServerApp) in a session of its own, which a signal to the
    SuperLink's group alone does not reach."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    groups, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            try:
                groups.add(os.getpgid(child))
            except ProcessLookupError:
                continue
    groups.discard(os.getpgrp())  # never the group of the process stopping them
    return {group for group in groups if group > 1}


def signal_groups(groups: set[int], sig: signal.Signals) -> None:
    for group in groups:
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            continue


def groups_gone(groups: set[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    return all(group_gone(g, max(0.0, deadline - time.monotonic())) for g in groups)


def write_flwr_home(folder: Path, control_address: str) -> Path:
    """FLWR_HOME with one SuperLink connection, `local`, at `control_address` (insecure)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "{control_address}"\n'
        "insecure = true\n"
    )
    return folder


@dataclass
class Deployment:
    """Processes this object started (and only those); `stop()` ends each by its PID/group."""

    workdir: Path
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)
    processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    superlink_fleet: str = ""
    superlink_control: str = ""
    node_logs: list[Path] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FLWR_HOME"] = str(self.workdir / "flwr-home")
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env.setdefault("TQDM_DISABLE", "1")
        return env

    def _start(self, name: str, args: Sequence[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        try:
            process = subprocess.Popen(
                [str(self.bin_dir / args[0]), *args[1:]],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=self.workdir,
                start_new_session=True,  # its own process group: its app processes die with it
            )
        except OSError as exc:
            raise DeploymentError(
                f"cannot start {args[0]} from {self.bin_dir} ({exc.strerror}); "
                "pip install '.[flower]' into this Python's environment"
            ) from exc
        finally:
            log.close()
        self.processes.append((name, process))
        return process

    def start_superlink(self, simulation: bool = False) -> None:
        """A SuperLink on a free port; with `simulation`, in simulation mode: Flower's simulation
        engine (Ray) then runs the ServerApp and `num-supernodes` virtual SuperNodes of each run
        (`submit_run(..., federation_config=...)`) and no SuperNode is started."""
        # flwr 1.42 serves the Fleet, Control and Runtime APIs over HTTP on one port.
        port = free_port()
        self.superlink_fleet = self.superlink_control = f"127.0.0.1:{port}"
        write_flwr_home(self.workdir / "flwr-home", self.superlink_control)
        self._start(
            "superlink",
            [
                "flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(port),
                "--disable-runtime-dependency-installation",
                *(["--simulation"] if simulation else []),
            ],
        )  # fmt: skip
        self.wait_for_port(port, 60, "superlink")

    def start_supernode(
        self, node_config: Mapping[str, str], superlink: str | None = None
    ) -> subprocess.Popen:
        index = len(self.node_logs)
        config = " ".join(f"{k}={json.dumps(str(v))}" for k, v in node_config.items())
        self.node_logs.append(self.workdir / f"supernode-{index}.log")
        return self._start(
            f"supernode-{index}",
            [
                "flower-supernode", "--insecure",
                "--superlink", superlink or self.superlink_fleet,
                "--host", "127.0.0.1", "--port", str(free_port()),
                "--max-retries", str(NODE_MAX_RETRIES), "--max-wait-time", str(NODE_MAX_WAIT_S),
                "--node-config", config,
            ],
        )  # fmt: skip

    def wait_for_port(self, port: int, timeout: float, name: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise DeploymentError(f"{name} did not open port {port} within {timeout:.0f} s")

    def check_alive(self, nodes: bool = True) -> None:
        """Raise if the SuperLink (and, with `nodes`, a SuperNode) started here has exited."""
        prefixes = ("superlink", "supernode") if nodes else ("superlink",)
        for name, process in self.processes:
            if name.startswith(prefixes) and process.poll() is not None:
                log = self.workdir / f"{name}.log"
                raise DeploymentError(
                    f"{name} exited with code {process.returncode}: "
                    f"{log_reason(log.read_text(errors='replace'))} (log: {log})"
                )

    def stop_process(self, process: subprocess.Popen, grace: float = 10.0) -> None:
        """Stop `process` and its descendants: SIGTERM their process groups, SIGKILL after
        `grace` s what is left."""
        self._stop_groups([process], grace)

    def stop(self, grace: float = 10.0) -> None:
        """Stop every process group started here and those of their descendants (Flower's
        SuperExec, ServerApp and ClientApp processes): SIGTERM all, wait `grace` s, SIGKILL."""
        self._stop_groups([process for _name, process in self.processes], grace)

    def _stop_groups(self, started: list[subprocess.Popen], grace: float) -> None:
        groups: set[int] = set()
        for process in started:
            groups |= process_groups(process.pid)  # before any dies: its children reparent
        signal_groups(groups, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in started:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        if not groups_gone(groups, max(0.0, deadline - time.monotonic())):
            signal_groups(groups, signal.SIGKILL)
            groups_gone(groups, 5.0)
        for process in started:
            if process.poll() is None:
                process.wait(timeout=5.0)

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
