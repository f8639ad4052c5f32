"""Triton Inference Server running model ``cris``: `TritonServer` starts the ``tritonserver``
binary that the ``nvidia-pytriton`` wheel ships (with its Python backend) as a child process on
a model repository it writes (`repository`), waits until the model is ready, and stops it.

Triton's dynamic batcher gathers concurrent requests (frames of equal size whose prompt tensors
have equal lengths) into one call of a model instance, which runs their frames through the
visual graph as one batch; each instance is a stub process with its own `Segmenter`. A request
the model refuses gets a Triton error naming the problem (`triton_model.answer`) while the
requests batched with it are served.

Triton's Python-backend stub links ``libpython3.x.so``, found on the library path: the system's
may be another build of the same Python version than the running interpreter (then the model
fails to load with ``'_thread.RLock' object has no attribute '_recursion_count'``), so the
child's environment puts the running interpreter's library directory first
(`server_environment`). Nothing of this process's environment changes.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

from ..extras import missing_extra
from . import wire
from .repository import ModelSettings, write_repository

log = logging.getLogger("cris_edge.serve")

#: What installs the server: the extra (tritonclient) and the wheel that ships tritonserver, whose
#: metadata caps numpy below 2 (for its own Python package, which cris-edge does not import).
INSTALL = ("pip install -c constraints.txt 'cris-edge[serve]' && "
           "pip install --no-deps -c constraints.txt nvidia-pytriton")


def missing_serving() -> Optional[str]:
    """None when tritonclient and the Triton server of ``nvidia-pytriton`` are installed; else
    the message that says how to install them."""
    missing = missing_extra("serve", "serving on Triton", ("tritonclient", "pytriton"))
    return None if missing is None else f"{missing.split(': pip install')[0]}: {INSTALL}"


def triton_distribution() -> tuple[Path, Path]:
    """``(tritonserver directory, its shared libraries)`` inside the installed ``nvidia-pytriton``
    wheel (found without importing its Python package). FileNotFoundError when absent."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Triton Inference Server is not installed: {INSTALL}")
    package = Path(list(spec.submodule_search_locations)[0])
    dist, libs = package / "tritonserver", package.parent / "nvidia_pytriton.libs"
    if not (dist / "bin" / "tritonserver").is_file():
        raise FileNotFoundError(f"{dist / 'bin' / 'tritonserver'} is missing: reinstall nvidia-pytriton")
    return dist, libs


def server_environment(libs: Path, environ: Optional[dict] = None) -> dict:
    """The environment of the ``tritonserver`` child: ``environ`` (default: this process's) with
    the running interpreter's library directory, then ``libs``, first on ``LD_LIBRARY_PATH``
    (the stub finds the matching libpython), and this interpreter's ``bin`` first on ``PATH``
    (the stub's Python finds this environment's packages through it)."""
    env = dict(os.environ if environ is None else environ)
    first = [p for p in (sysconfig.get_config_var("LIBDIR"), str(libs)) if p]
    rest = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p not in first]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(first + rest)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def backend_directory(root: Path, dist: Path) -> Path:
    """A Triton backend directory under ``root`` with the Python backend and the stub built for
    this interpreter's Python version."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeError(f"nvidia-pytriton has no Triton Python-backend stub for Python {version}")
    python = root / "backends" / "python"
    python.mkdir(parents=True)
    for source in (dist / "backends" / "python" / "libtriton_python.so",
                   dist / "backends" / "python" / "triton_python_backend_utils.py", stub):
        shutil.copy2(source, python / source.name)
    return root / "backends"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (Linux), so that
    a killed cris-serve leaves no Triton behind."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class TritonServer:
    """``tritonserver`` serving model ``cris`` as ``settings`` say, on ``host``'s ports, in a
    temporary directory removed by `stop`. Use as a context manager, or `start` / `stop`.

    `start` returns once the model is ready (RuntimeError with the end of Triton's log when it
    exits first or is not ready within ``startup_timeout`` seconds).
    """

    def __init__(self, settings: ModelSettings, host: str = "127.0.0.1", http_port: int = 8000,
                 grpc_port: int = 8001, metrics_port: int = 8002, startup_timeout: float = 300.0,
                 log_file=None):
        self.settings, self.host = settings, host
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.startup_timeout = startup_timeout
        self.log_file = log_file
        self.process: Optional[subprocess.Popen] = None
        self._workdir: Optional[Path] = None

    @property
    def endpoints(self) -> dict[str, str]:
        return {"http": f"http://{self.host}:{self.http_port}", "grpc": f"grpc://{self.host}:{self.grpc_port}",
                "metrics": f"http://{self.host}:{self.metrics_port}/metrics"}

    def command(self, repository: Path, backends: Path, dist: Path) -> list[str]:
        return [str(dist / "bin" / "tritonserver"), f"--model-repository={repository}",
                f"--backend-directory={backends}", f"--cache-directory={dist / 'caches'}",
                f"--http-address={self.host}", f"--http-port={self.http_port}",
                f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
                f"--metrics-port={self.metrics_port}", "--allow-gpu-metrics=false",
                "--log-info=false", "--exit-timeout-secs=5", "--strict-readiness=true"]

    def ready(self) -> bool:
        """Whether model ``cris`` answers ready on the HTTP endpoint (Triton's readiness URL)."""
        url = f"{self.endpoints['http']}/v2/models/{wire.MODEL_NAME}/ready"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status == 200
        except OSError:  # refused, not ready (HTTP 400), timed out
            return False

    def start(self) -> "TritonServer":
        dist, libs = triton_distribution()
        self._workdir = Path(tempfile.mkdtemp(prefix="cris-serve-"))
        try:
            repository = write_repository(self._workdir / "models", self.settings)
            backends = backend_directory(self._workdir, dist)
            self.process = subprocess.Popen(self.command(repository, backends, dist), env=server_environment(libs),
                                            stdout=self.log_file, stderr=subprocess.STDOUT if self.log_file else None,
                                            start_new_session=True,
                                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
            deadline = time.monotonic() + self.startup_timeout
            while not self.ready():
                if self.process.poll() is not None:
                    raise RuntimeError(f"Triton Inference Server exited with code {self.process.returncode} before "
                                       "model cris was ready (its log says why)")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"model cris was not ready within {self.startup_timeout:.0f} s")
                time.sleep(0.25)
        except BaseException:
            self.stop()
            raise
        return self

    def wait(self) -> int:
        """Block until Triton exits; its exit code."""
        return self.process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop Triton (SIGINT: it finishes the requests in flight, then a kill after
        ``timeout`` seconds) and remove the temporary directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
