"""Learn, tune and write the steering concepts (hue=b, position=left|right, size=larger|smaller) of a shapes release.

    OMP_NUM_THREADS=1 python scripts/build_concepts.py --release tide-dit-tiny/shapes \\
        --output-dir pretrained/saes/tide-dit-tiny-shapes/concepts

Samples on seed 1 choose the latents and fit the "on the shape" probes; samples on seeds 5000-5191
choose strengths and windows (`shape_concepts.tune_shape_concepts`). Benchmarks evaluate on other
seeds (benchmarks/bench_interventions.py). Takes about 10 minutes on one core.
"""

from __future__ import annotations

import argparse
import time

import sae_lens_dit  # noqa: F401  (registers the bundled releases)
from sae_lens_dit.analysis.interventions.shape_concepts import build_shape_concepts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="tide-dit-tiny/shapes")
    parser.add_argument("--architecture", default="tide")
    parser.add_argument("--hooks", nargs="+", default=["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"])
    parser.add_argument("--hue-hook", default="blocks.1.hook_resid_post")
    parser.add_argument("--output-dir", required=True)
    args = parser.parse_args()
    start = time.time()
    index = build_shape_concepts(args.output_dir, args.release, args.architecture, args.hooks, args.hue_hook)
    print(f"wrote {index} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
