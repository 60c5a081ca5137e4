"""Runs keras_cases.py once per Keras backend, each in its own process: Keras picks its backend when it is first
imported. The examples of examples/keras run at a tiny size in the TensorFlow process (the tutorials' backend;
the cases cover the same library code on the others). The processes start together, at the first test of this
module, and each test waits for its backend's. A backend whose framework is not installed is skipped."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kldiv

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
FRAMEWORK = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
BACKENDS = tuple(FRAMEWORK)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def runs():
    if not _installed("keras"):
        pytest.skip("keras is not installed (pip install 'kldiv[keras]')")
    source = str(Path(kldiv.__file__).parent.parent)  # the kldiv this process imports, also in the children
    started = {}
    for backend in BACKENDS:
        if not _installed(FRAMEWORK[backend]):
            continue
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": os.pathsep.join(
            [source, *filter(None, [os.environ.get("PYTHONPATH")])]), "TF_CPP_MIN_LOG_LEVEL": "2"}
        files = [HERE / "keras_cases.py"] + ([HERE / "keras_examples.py"] if backend == "tensorflow" else [])
        command = [sys.executable, "-m", "pytest", *map(str, files), "-q", "-p", "no:cacheprovider",
                   "-W", "ignore::DeprecationWarning"]
        started[backend] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True)
    yield started
    for process in started.values():
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_cases_and_examples_pass_on_backend(backend, runs):
    if backend not in runs:
        pytest.skip(f"{FRAMEWORK[backend]} is not installed, so Keras's {backend} backend is not tested")
    output, _ = runs[backend].communicate(timeout=1200)
    assert runs[backend].returncode == 0, f"KERAS_BACKEND={backend}:\n{output[-6000:]}"
