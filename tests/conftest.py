"""Test set-up: 8 fake CPU devices (set before jax is imported) so sharded paths run without a GPU."""
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
DATA_ROOT = os.path.join(REPO, "..", "shared", "data")

import importlib.util  # noqa: E402

import pytest  # noqa: E402


def load_script(relpath):
  """A script outside the package (e.g. ``benchmarks/report.py``) imported as a module."""
  name = os.path.splitext(os.path.basename(relpath))[0]
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, relpath))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long test, left out of the default run and CI")
  config.addinivalue_line("markers", "realdata: needs ../shared/data")


@pytest.fixture
def data_root():
  if not os.path.isdir(DATA_ROOT):
    pytest.skip(f"real data not found at {DATA_ROOT} (../shared/data beside the repo)")
  return DATA_ROOT
