"""Runs tensorflow_cases.py (TensorFlow tensors in the core API) in a process of its own.

TensorFlow cannot share the suite's process: once it is loaded, importing triton (torch.compile does, in the
kldiv.nn tests) aborts, as both bundle LLVM ("Option ... registered more than once"). Skipped without TensorFlow.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kldiv

HERE = Path(__file__).parent


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="tensorflow is not installed")
def test_tensorflow_cases_pass_in_their_own_process():
    source = str(Path(kldiv.__file__).parent.parent)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([source, *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-m", "pytest", str(HERE / "tensorflow_cases.py"), "-q", "-p",
                           "no:cacheprovider"], cwd=HERE.parent.parent, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
