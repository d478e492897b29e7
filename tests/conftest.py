"""Test-wide set-up: 8 forced host devices (sharding tests), an `x64` fixture for float64 oracles."""

import gc
import os

# Must be set before jax is imported anywhere: sharding tests need several devices on CPU.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

try:  # One BLAS thread: the NumPy work in tests is small, and spinning BLAS threads on a busy
    # 2-core machine made a 256 x 200 SVD take ~2 s instead of ~40 ms (measured). XLA is unaffected.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop XLA's compiled programs (and the arrays only they kept alive) after each test module.

    A pytest-xdist worker runs hundreds of modules in one process and XLA keeps every program it
    compiled: on a 24 GiB, 2-core machine with ../shared present, the two workers grew past 5 GB
    each and the kernel's OOM killer took one down mid-test (measured 2026-11-30). Modules rarely
    share shapes, so recompiling across them costs little."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def x64():
    """Run one test with float64 enabled, then restore the previous setting."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
SHARED_DATA = os.path.join(SHARED, "data")
SHARED_MODELS = os.path.join(SHARED, "models")


def _shared_folder(path: str, what: str) -> str:
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        pytest.skip(f"shared {what} are not beside this checkout")
    return path


@pytest.fixture
def shared_data():
    """Path of the real datasets beside the checkout; skips the test when they are absent."""
    return _shared_folder(SHARED_DATA, "datasets")


@pytest.fixture
def shared_models():
    """Path of the real checkpoints beside the checkout; skips the test when they are absent."""
    return _shared_folder(SHARED_MODELS, "checkpoints")
