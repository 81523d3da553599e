"""The benchmark helpers' own logic, on tiny stand-ins (no real timing claims)."""

import time

import torch
from torch.utils.data import Dataset

from segkit.bench import loader_samples_per_s


class SlowSamples(Dataset):
    """Six samples, each taking ``seconds`` to produce without using the CPU (a sleep)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int):
        time.sleep(self.seconds)
        return torch.zeros(3, 2, 2), torch.zeros(2, 2, dtype=torch.int64)


def test_loader_rate_is_timed_over_batches_not_short_epochs():
    dataset = SlowSamples(0.05)
    one = loader_samples_per_s(dataset, batch_size=2, num_workers=0, batches=12)
    assert 14 < one < 21  # 20 samples/s at most: 50 ms a sample, more than one epoch's 3 batches
    two = loader_samples_per_s(dataset, batch_size=2, num_workers=2, batches=12)
    assert two / one > 1.6  # whole three-batch epochs capped this at 1.5x
