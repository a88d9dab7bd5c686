"""pytest fixtures shared by every test module."""

import pytest
import torch
from hypothesis import settings


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(1234)


# Property tests draw the same examples on every run, so CI cannot flake on a
# rare draw; `--hypothesis-profile=explore` searches afresh.
settings.register_profile("deterministic", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile("deterministic")
