"""Real ``iqa-store`` processes for fault trials, without paying Python's start-up for each one.

A trial kills runs with SIGKILL dozens of times; a fresh ``iqa-store`` process costs seconds of
imports (torch, scikit-learn, zarr) before it does any work, which would swamp both the time
budget and the kill points. The fork server is one Python process that imports the CLI and its
heavy dependencies once and then forks a child per command: each child is a separate process
running ``iqa_store.cli.main`` with its own argv, environment and output files, so a SIGKILL
ends it exactly as it would end a process started from a shell (no cleanup, no atexit, no
flush), and its exit status is the CLI's.

Protocol on the server's stdin/stdout: one JSON object per line. ``{"run": argv, "out": path,
"err": path, "env": {...}}`` forks and answers ``{"pid": N}``; ``{"wait": N}`` reaps child N and
answers ``{"status": S}`` (the exit code, or minus the signal that ended it). A run request may
carry ``"enospc": {"under": folder, "after": n}`` (see ``_inject_enospc``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRELOAD = ("torch", "sklearn.linear_model", "zarr", "pandas", "PIL.Image", "iqa_store.cli", "iqa_store.api",
           "iqa_store.extraction.runner", "iqa_store.extraction.jobs", "iqa_store.extractors.brisque",
           "iqa_store.fit", "iqa_store.fit.grid", "iqa_store.report", "iqa_store.train", "iqa_store.train.trainer",
           "iqa_store.train.cnniqa", "iqa_store.train.reiqa", "torchvision.transforms.v2.functional",
           "iqa_store.cli.extract_cmd", "iqa_store.cli.fit_cmd", "iqa_store.cli.train_cmd", "tqdm")


def _inject_enospc(under: str, budget: int) -> None:
    """Fault injection at the OS boundary: writes to files below ``under`` fail with ENOSPC once
    ``budget`` bytes have gone through (the part that still fits is written first, as on a full disk).

    Every Python-level file write passes through ``io.open`` (``open``, ``Path.open``, ``os.fdopen``,
    zarr's local store) or ``os.write``; both are wrapped, in this child process only.
    """
    import builtins
    import errno
    import io
    left = [budget]
    real_open, real_write = io.open, os.write

    def path_of(file: Any) -> str:
        if isinstance(file, int):
            return os.readlink(f"/proc/self/fd/{file}")
        return os.path.abspath(os.fspath(file))

    def charge(size: int) -> int:
        allowed = min(size, left[0])
        left[0] -= allowed
        return allowed

    def full(name: str) -> OSError:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)

    class FullDisk:
        def __init__(self, handle: Any, name: str) -> None:
            self._handle, self._name = handle, name

        def write(self, data: Any) -> int:
            size = len(data) if isinstance(data, str) else memoryview(data).nbytes
            allowed = charge(size)
            if allowed < size:
                if allowed:
                    self._handle.write(data[:allowed] if isinstance(data, str) else memoryview(data).cast("B")[:allowed])
                raise full(self._name)
            return self._handle.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._handle, name)

        def __enter__(self) -> "FullDisk":
            return self

        def __exit__(self, *exc: object) -> None:
            self._handle.close()

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, mode, *args, **kwargs)
        name = path_of(file)
        if any(flag in mode for flag in "wax+") and name.startswith(under):
            return FullDisk(handle, name)
        return handle

    def write(fd: int, data: Any) -> int:
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if name.startswith(under):
            size = memoryview(data).nbytes
            allowed = charge(size)
            if allowed < size:
                if allowed:
                    real_write(fd, memoryview(data).cast("B")[:allowed])
                raise full(name)
        return real_write(fd, data)

    io.open = builtins.open = open_
    os.write = write


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become ``iqa-store ARGV`` with its own files and environment."""
    os.setpgid(0, 0)  # its own process group: a kill of the group reaches its helpers too
    for fd, name, flags in ((0, os.devnull, os.O_RDONLY), (1, request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, request["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        target = os.open(name, flags, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.environ.update(request.get("env", {}))
    if request.get("cwd"):
        os.chdir(request["cwd"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if request.get("enospc"):
        _inject_enospc(request["enospc"]["under"], request["enospc"]["after"])
    code = 1
    try:
        from iqa_store.cli import main
        sys.argv = ["iqa-store", *request["run"]]
        main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # what the interpreter does with an uncaught exception: traceback, exit 1
        import traceback
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    os._exit(code)


def serve() -> None:
    import importlib
    for module in PRELOAD:
        importlib.import_module(module)
    import torch
    torch.set_num_threads(1)
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if "run" in request:
            pid = os.fork()
            if pid == 0:
                _child(request)
            print(json.dumps({"pid": pid}), flush=True)
        elif "wait" in request:
            _, status = os.waitpid(request["wait"], 0)
            print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)


@dataclass
class Child:
    """One forked ``iqa-store`` run."""

    server: "ForkServer"
    pid: int
    out: Path
    err: Path
    started: float
    status: int | None = None
    ended: float | None = None

    def alive(self) -> bool:
        """Running (a finished child that is not reaped yet is a zombie: not running)."""
        if self.status is not None:
            return False
        try:
            with open(f"/proc/{self.pid}/stat") as handle:
                return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def kill(self) -> int:
        """SIGKILL to the child's whole process group; returns its exit status (minus the signal)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.wait()

    def wait(self) -> int:
        if self.status is None:
            self.status = self.server.ask({"wait": self.pid})["status"]
            self.ended = time.monotonic()
        return self.status

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()


class ForkServer:
    """Start with ``ForkServer(folder)``; ``run(argv)`` forks an ``iqa-store`` child; ``close()``."""

    def __init__(self, folder: Path, env: dict[str, str] | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._count = 0
        environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
        repo = str(Path(__file__).resolve().parents[2])
        environment["PYTHONPATH"] = os.pathsep.join(p for p in (repo, environment.get("PYTHONPATH")) if p)
        self._process = subprocess.Popen([sys.executable, "-c", "from tests.reliability.forkserver import serve; serve()"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment,
                                         cwd=repo)
        ready = self._process.stdout.readline()
        if not ready:
            raise RuntimeError("the fork server did not start")

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        return json.loads(self._process.stdout.readline())

    def run(self, argv: list[str], env: dict[str, str] | None = None, name: str = "run",
            enospc: tuple[Path, int] | None = None) -> Child:
        """Fork ``iqa-store ARGV``; ``enospc=(folder, n)``: its writes below folder fail with ENOSPC after n bytes."""
        self._count += 1
        out, err = (self.folder / f"{self._count:04d}-{name}.{kind}" for kind in ("out", "err"))
        started = time.monotonic()
        request = {"run": [str(a) for a in argv], "out": str(out), "err": str(err), "env": env or {}}
        if enospc:
            request["enospc"] = {"under": str(Path(enospc[0]).resolve()), "after": int(enospc[1])}
        pid = self.ask(request)["pid"]
        return Child(self, pid, out, err, started)

    def complete(self, argv: list[str], env: dict[str, str] | None = None, name: str = "run") -> Child:
        """Run to the end; the child's exit status must be 0."""
        child = self.run(argv, env, name)
        status = child.wait()
        assert status == 0, f"iqa-store {' '.join(map(str, argv))} exited {status}:\n{child.stderr[-3000:]}"
        return child

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=30)
