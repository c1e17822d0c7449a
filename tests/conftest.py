"""Test-session settings: one thread for torch and the BLAS libraries, and freed heap kept
(as the command line does: :mod:`ncsim.heap`), and a derivation cache of the session's own.

The test problems are small, so their cost is per-operation overhead; a second intra-op
thread only adds contention on a shared 2-core machine (10-40x slower under load).
"""

import atexit
import os
import shutil
import sys
import tempfile

import mpmath
import pytest

# the symbolic derivations are cached in a folder of this session (derived afresh each session,
# never read from or written to the user's cache); subprocesses inherit it
os.environ["NCSIM_CACHE_DIR"] = tempfile.mkdtemp(prefix="ncsim-test-cache-")
atexit.register(shutil.rmtree, os.environ["NCSIM_CACHE_DIR"], ignore_errors=True)

from ncsim.heap import keep_freed_memory  # noqa: E402
from ncsim.threads import set_threads  # noqa: E402

set_threads(1)
keep_freed_memory()


@pytest.fixture(autouse=True)
def _mpmath_digits(request):
    """mpmath at the precision a test (or its module's ``pytestmark``) asks for with
    ``@pytest.mark.mpmath_digits(n)``, restored afterwards (a module-level ``mp.dps = n`` would
    be overwritten by whichever test module is imported last)."""
    marker = request.node.get_closest_marker("mpmath_digits")
    if marker is None:
        yield
        return
    with mpmath.workdps(marker.args[0]):
        yield


@pytest.fixture(autouse=True)
def _close_figures():
    """Close every pyplot figure a test left open (where pyplot was imported at all)."""
    yield
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close("all")


@pytest.fixture
def no_figures(monkeypatch):
    """Skip drawing in the study analyses: the figures are not what the tests using this
    check, and saving them costs seconds."""
    import matplotlib.pyplot as plt

    import ncsim.study.analyses as analyses

    def close(fig, figdir, name):
        plt.close(fig)
        return f"figures/{name}.png"

    monkeypatch.setattr(analyses, "_figure", close)
    monkeypatch.setattr(analyses, "_trajectory_fig", lambda *args, **kwargs: None)


@pytest.fixture(scope="module")
def blobs():
    """3 classes x 4 samples of a Gaussian mixture in 5 dimensions, 2 test samples per class
    (a dataset of :mod:`ncsim.validate.data` that trains in milliseconds)."""
    from ncsim.validate.data import load_dataset

    return load_dataset("gaussian", per_class=4, classes=3, dim=5, seed=1, test_per_class=2)


@pytest.fixture(scope="session")
def tiny_net(tmp_path_factory):
    """Checkpoints and log of the tiny two-phase run of compare_helpers, trained once per
    process; a test that changes anything works on a copy (compare_helpers.copy_run)."""
    from compare_helpers import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("tiny") / "run")


@pytest.fixture
def matmul_calls(monkeypatch):
    """Count the calls of numpy's matmul made by the products module, with the route on as on
    a machine that takes it (an AMD CPU; :func:`products.host_route_default`)."""
    import numpy as np

    from ncsim import products

    monkeypatch.setattr(products, "HOST_BLAS", products.optimised(products.numpy_blas()))
    calls = []
    real = np.matmul

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(products.np, "matmul", counting)
    return calls
