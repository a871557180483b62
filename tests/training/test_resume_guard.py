"""Guards added for issue 18's remaining cases: a trainer checkpoint that is not plain tensors is refused before
resuming (the splice-width and record() guards are in tests/unit/hooked, the non-finite save guard in
tests/integration/test_runner.py)."""

import pytest
import torch

from sae_lens_dit.training.runner import check_trainer_state


class NotATensor:
    """Any pickled object that is not a tensor or a plain container."""


def test_a_trainer_state_that_is_not_plain_tensors_is_refused(tmp_path):
    torch.save({"x": NotATensor()}, tmp_path / "trainer_state.pt")
    with pytest.raises(ValueError, match="does not load as plain tensors"):
        check_trainer_state(tmp_path)
    torch.save({"x": torch.ones(2)}, tmp_path / "trainer_state.pt")
    check_trainer_state(tmp_path)
