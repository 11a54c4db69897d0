"""Test setup: Triton kernels run in the interpreter when no GPU is present; every test is seeded."""
import os

import torch

if not torch.cuda.is_available():
    # must happen before anything imports triton
    os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same seeds (NumPy's global RNG and torch)."""
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# Per-test time limit, for runs that must come back (benchmarks/device_check.sh sets HILCORE_TEST_TIMEOUT):
# a test over the limit fails with a TimeoutError naming it (SIGALRM); one stuck in native code (a hung kernel)
# gets every thread's traceback dumped and the process ended at twice the limit (faulthandler), so the
# log still says which test it was. pytest-timeout is not a dependency.
_TEST_TIMEOUT = float(os.environ.get("HILCORE_TEST_TIMEOUT", "0") or 0)

if _TEST_TIMEOUT > 0:
    import faulthandler
    import signal

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(item):
        def _expired(signum, frame):
            raise TimeoutError(f"{item.nodeid} ran over HILCORE_TEST_TIMEOUT={_TEST_TIMEOUT:g} s")

        old = signal.signal(signal.SIGALRM, _expired)
        signal.setitimer(signal.ITIMER_REAL, _TEST_TIMEOUT)
        faulthandler.dump_traceback_later(2 * _TEST_TIMEOUT + 5, exit=True)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            faulthandler.cancel_dump_traceback_later()
            signal.signal(signal.SIGALRM, old)
