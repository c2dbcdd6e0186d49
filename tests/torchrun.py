"""Running ``python -m mobilezoo ...`` under torchrun (2 processes, one thread each) from a test."""

from __future__ import annotations

import os
import subprocess
import sys


def torchrun_mobilezoo(*args: str, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """``torch.distributed.run --standalone --nproc_per_node nproc -m mobilezoo *args`` with this interpreter and
    import path, OMP_NUM_THREADS=1; the completed process (stdout and stderr captured as text)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    return subprocess.run([*cmd, "-m", "mobilezoo", *args], env=env, capture_output=True, text=True, timeout=timeout)
