"""The shuffle buffer mixes rows without losing, duplicating or decoupling them."""

import torch

from sae_lens_dit.training.harvest import ActivationChunk, ShuffleBuffer


def _chunks(n_chunks: int, rows: int, d: int = 3):
    for c in range(n_chunks):
        ids = torch.arange(c * rows, (c + 1) * rows)
        acts = ids[:, None].float().repeat(1, d)  # row id in every column: lets us track rows
        yield ActivationChunk(
            activations={"h": acts},
            timestep=ids.float() * 0.5,
            step=ids,
            branch=torch.zeros_like(ids),
            sample=ids,
            token=ids,
            label=ids,
        )


def test_every_row_once_and_timesteps_stay_with_their_rows():
    batches = list(ShuffleBuffer(size=64, seed=3).batches(_chunks(10, 25), "h", batch_size=16))
    x = torch.cat([b[0] for b in batches])
    t = torch.cat([b[1] for b in batches])
    assert all(len(b[0]) == 16 for b in batches)
    ids = x[:, 0].long()
    assert len(set(ids.tolist())) == len(ids)  # no duplicates
    assert len(ids) == 250 // 16 * 16  # only the final partial batch is dropped
    torch.testing.assert_close(t, ids.float() * 0.5, rtol=0, atol=0)  # timestep travels with its row


def test_rows_are_mixed_across_chunks_and_deterministic_in_seed():
    first = next(ShuffleBuffer(size=64, seed=3).batches(_chunks(10, 25), "h", batch_size=16))[0][:, 0]
    again = next(ShuffleBuffer(size=64, seed=3).batches(_chunks(10, 25), "h", batch_size=16))[0][:, 0]
    other = next(ShuffleBuffer(size=64, seed=4).batches(_chunks(10, 25), "h", batch_size=16))[0][:, 0]
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert len({int(i) // 25 for i in first}) > 1  # a batch draws on several harvest chunks


def test_unknown_hook_is_named():
    import pytest

    with pytest.raises(KeyError, match="blocks.9"):
        next(ShuffleBuffer(size=8).batches(_chunks(2, 8), "blocks.9.hook_resid_post", batch_size=4))
