"""Suite-wide test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    # The suite's models are tiny: with 2 OpenMP threads on a 2-core machine where
    # anything else runs, every op waits for the busy core. One thread is faster and steady.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
