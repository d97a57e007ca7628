"""Shared test configuration."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _forget_declared_profile():
    """A test that calls ``wmnb.params.notebook_config`` declares a profile to the process (for
    the truth gate, :func:`wmnb.paths.current_profile`); forget it after the test, so that the
    truth the next test reads does not depend on the order of the tests."""
    yield
    from wmnb.paths import declare_profile

    declare_profile(None)
