"""Both modes sample like Opacus's make_private: same rate, steps per epoch and mean divisor."""

from __future__ import annotations

import pytest
import torch
from opacus.data_loader import DPDataLoader
from torch.utils.data import DataLoader, TensorDataset

from ppml_hybrid.training.sampling import PoissonSchedule


@pytest.mark.parametrize("rows, batch", [(3360, 256), (3360, 64), (100, 7), (10, 64)])
def test_schedule_matches_opacus_poisson_loader(rows, batch):
    loader = DataLoader(TensorDataset(torch.zeros(rows, 1)), batch_size=batch)
    dp_loader = DPDataLoader.from_data_loader(loader)
    plan = PoissonSchedule.of(rows=rows, batch_size=batch, epochs=3, max_steps=None)
    assert plan.sample_rate == pytest.approx(dp_loader.sample_rate)
    assert plan.steps_per_epoch == len(dp_loader)
    assert plan.total_steps == 3 * len(dp_loader)
    # PrivacyEngine.make_private divides the summed gradient by int(N / len(loader))
    assert plan.expected_batch == int(rows * (1 / len(loader)))


def test_max_steps_cuts_the_run():
    assert PoissonSchedule.of(rows=3360, batch_size=256, epochs=4, max_steps=5).total_steps == 5
