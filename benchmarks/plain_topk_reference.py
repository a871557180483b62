"""A plain-torch TopK SAE, independent of SAELens and of this package's training code: the reference
that says what explained variance a healthy TopK reaches on these activations.

Why: a baseline with most latents dead makes any comparison against it meaningless, and "healthy"
needs a number measured outside the code under test. The recipe is the one in DESIGN.md's SAE
training facts (it reached normalized MSE ~0.011 on a digits DiT's block-2 residual at k 16): inputs
centred on the training mean and divided by the mean centred row norm, decoder rows renormalised to
unit norm after every Adam step, encoder initialised as the decoder's transpose, random batches
from the whole set, no AuxK, constant learning rate.

    python benchmarks/plain_topk_reference.py --rows rows.safetensors  # keys train_x, test_x (+ train_t, test_t)

`train_plain_topk(train_x, test_x, k, d_sae)` is what `bench_tide_vs_baselines.py` calls.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from safetensors.torch import load_file

from sae_lens_dit.analysis.evals import DENSE_THRESHOLD  # the package's one definition of a dense latent


def train_plain_topk(
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    k: int,
    d_sae: int,
    steps: int = 3000,
    batch_size: int = 1024,
    lr: float = 4e-4,
    seed: int = 0,
) -> dict[str, float]:
    """Train on rows train_x [n, d]; return held-out explained variance (1 - summed squared error over the
    summed squared distance to the test mean), dead and dense fractions on test_x [m, d]."""
    g = torch.Generator().manual_seed(seed)
    mean = train_x.mean(0)
    scale = (train_x - mean).norm(dim=1).mean()
    x_train = (train_x - mean) / scale
    d = x_train.shape[1]
    W_dec = torch.randn(d_sae, d, generator=g)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_dec.requires_grad_(True)
    W_enc = W_dec.detach().T.clone().requires_grad_(True)
    b_enc = torch.zeros(d_sae, requires_grad=True)
    b_dec = torch.zeros(d, requires_grad=True)
    opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=lr)

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = (x - b_dec) @ W_enc + b_enc
        top = pre.topk(k, dim=-1)
        codes = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        return codes @ W_dec + b_dec, codes

    for _ in range(steps):
        idx = torch.randint(0, len(x_train), (batch_size,), generator=g)
        x = x_train[idx]
        x_hat, _ = forward(x)
        loss = (x_hat - x).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            W_dec /= W_dec.norm(dim=1, keepdim=True)

    with torch.no_grad():
        x_test = (test_x - mean) / scale
        fired = torch.zeros(d_sae)
        err = 0.0
        for i in range(0, len(x_test), 8192):
            x_hat, codes = forward(x_test[i : i + 8192])
            err += float((x_hat - x_test[i : i + 8192]).pow(2).sum())
            fired += (codes != 0).sum(0).float()
        var = float((x_test - x_test.mean(0)).pow(2).sum())
        rate = fired / len(x_test)
    return {
        "explained_variance": 1 - err / var,
        "dead_fraction": float((fired == 0).float().mean()),
        "dense_fraction": float((rate > DENSE_THRESHOLD).float().mean()),
        "l0": float(k),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", required=True, help="safetensors file with train_x [n, d] and test_x [m, d]")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--d-sae", type=int, default=1536)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = load_file(args.rows)
    start = time.perf_counter()
    result = train_plain_topk(rows["train_x"], rows["test_x"], args.k, args.d_sae, args.steps, seed=args.seed)
    print(json.dumps({**result, "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
