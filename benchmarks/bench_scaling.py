"""Sizing for scale-out harvests: measured on this CPU, extrapolated to DiT-XL/2, PixArt-XL and Flux.

1. Measured: an on-disk harvest (`write_cache`) of the bundled digits DiT, float32 and float16
   storage, against plain sampling of the same images (no hooks, nothing written): rows per
   second, bytes per row on disk, ratios of medians.
2. Measured: one forward step of each family at its real width and a real token count, with
   one block of each kind (random weights, diffusers' own classes), per-block times from forward
   hooks, extrapolated to the real depth.
3. The sizing table: tokens per image and step, bytes per token (fp16/bf16), disk per billion
   tokens, shard sizes, harvest time per billion kept tokens on this CPU (from 2; larger token
   counts scaled by a FLOP model) and an H100 estimate from FLOPs (not measured).

    python benchmarks/bench_scaling.py [--repeats 3] [--out benchmarks/results/scaling.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow.parquet as pq
import torch
from diffusers import DiTTransformer2DModel, FluxTransformer2DModel, PixArtTransformer2DModel

from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.toy.backbones import load_tiny_dit
from sae_lens_dit.training.activation_cache import write_cache
from sae_lens_dit.training.harvest import HarvestConfig

METADATA_BYTES = 4 + 5 * 8  # timestep float32 + step, branch, sample, token, label int64
H100_BF16_FLOPS = 989e12  # dense bf16 peak
ASSUMED_UTILISATION = 0.4
STEPS = 50


@dataclass(frozen=True)
class Family:
    name: str
    width: int
    blocks: dict[str, int]  # block kind -> count in the real model
    image_tokens: int
    text_tokens: int  # tokens in the joint attention (Flux) or cross-attended (PixArt)
    branches: int  # CFG rows per image and step (Flux-dev is guidance-distilled: 1)
    images_per_shard: int


FAMILIES = {
    "DiT-XL/2 256px": Family("dit", 1152, {"block": 28}, 256, 0, 2, 64),
    "DiT-XL/2 512px": Family("dit", 1152, {"block": 28}, 1024, 0, 2, 16),
    "PixArt-XL-2 512px": Family("pixart", 1152, {"block": 28}, 1024, 120, 2, 16),
    "PixArt-XL-2 1024px": Family("pixart", 1152, {"block": 28}, 4096, 120, 2, 4),
    "Flux.1-dev 512px": Family("flux", 3072, {"double": 19, "single": 38}, 1024, 512, 1, 16),
    "Flux.1-dev 1024px": Family("flux", 3072, {"double": 19, "single": 38}, 4096, 512, 1, 4),
}
MEASURED = {"dit": "DiT-XL/2 256px", "pixart": "PixArt-XL-2 512px", "flux": "Flux.1-dev 512px"}


def block_flops(f: Family) -> float:
    """FLOPs of one block for one image: 12 d^2 per token in linear layers (attention projections
    and a 4x MLP), 4 N^2 d in self-attention over the N tokens it sees; PixArt adds cross-attention."""
    d = f.width
    if f.name == "flux":  # text and image tokens share one attention; each stream has its own weights
        n = f.image_tokens + f.text_tokens
        return 2 * 12 * d * d * n + 4 * n * n * d
    flops = 2 * 12 * d * d * f.image_tokens + 4 * f.image_tokens**2 * d
    if f.name == "pixart":
        flops += 2 * 2 * d * d * (f.image_tokens + f.text_tokens) + 4 * f.image_tokens * f.text_tokens * d
    return flops


# -- 1. the tiny model, end to end -----------------------------------------------------------------
def measure_tiny(repeats: int) -> list[tuple[str, float, float, float]]:
    """(job, median seconds, rows per second, bytes per row on disk); jobs interleaved, after a warm-up."""
    pipe = load_tiny_dit("digits")
    hooked = HookedDiT(pipe.transformer)
    cfg = HarvestConfig(
        hook_names=("blocks.2.hook_resid_post",),
        num_images=32,
        images_per_batch=32,
        num_inference_steps=STEPS,
        branch="both",
    )
    rows: dict[str, tuple[int, float]] = {}

    def plain(_: str) -> None:
        labels = [i % 10 for i in range(cfg.images_per_batch)]
        pipe(
            class_labels=labels, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0), output_type="np"
        )

    def harvest(storage: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            out = write_cache(pipe, hooked, replace(cfg, storage_dtype=storage), Path(tmp) / "acts")
            shards = list(out.glob("shard-*.parquet"))
            n = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
            rows[storage] = (n, sum(s.stat().st_size for s in shards) / n)

    jobs = {
        "plain sampling (no hooks, nothing written)": (plain, ""),
        "write_cache, float32 storage": (harvest, "float32"),
        "write_cache, float16 storage": (harvest, "float16"),
    }
    plain("")  # warm-up
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, (fn, arg) in jobs.items():
            start = time.perf_counter()
            fn(arg)
            times[name].append(time.perf_counter() - start)
    results = []
    for name, (_, storage) in jobs.items():
        seconds = statistics.median(times[name])
        n, per_row = rows.get(storage, (0, 0.0))
        results.append((name, seconds, n / seconds, per_row))
    return results


# -- 2. real width, one block of each kind ---------------------------------------------------------
def build(f: Family) -> tuple[torch.nn.Module, dict, dict[str, list[torch.nn.Module]]]:
    d, heads = f.width, f.width // (72 if f.name != "flux" else 128)
    b = f.branches
    if f.name in ("dit", "pixart"):  # same latent grid and blocks; they differ in how they are conditioned
        side = int(f.image_tokens**0.5) * 2
        grid = dict(
            num_attention_heads=heads,
            attention_head_dim=72,
            in_channels=4,
            out_channels=8,
            num_layers=1,
            sample_size=side,
            patch_size=2,
        )
        inputs = {"hidden_states": torch.randn(b, 4, side, side), "timestep": torch.full((b,), 500)}
        if f.name == "dit":
            model = DiTTransformer2DModel(**grid, num_embeds_ada_norm=1000)
            inputs["class_labels"] = torch.tensor([1, 1000][:b])
        else:
            model = PixArtTransformer2DModel(
                **grid,
                cross_attention_dim=d,
                caption_channels=None,
                norm_type="ada_norm_single",
                use_additional_conditions=False,
            )
            inputs["encoder_hidden_states"] = torch.randn(b, f.text_tokens, d)
            inputs["added_cond_kwargs"] = {"resolution": None, "aspect_ratio": None}
        return model, inputs, {"block": list(model.transformer_blocks)}
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=128,
        num_attention_heads=heads,
        joint_attention_dim=4096,
        pooled_projection_dim=768,
        guidance_embeds=True,
        axes_dims_rope=(16, 56, 56),
    )
    inputs = {
        "hidden_states": torch.randn(b, f.image_tokens, 64),
        "encoder_hidden_states": torch.randn(b, f.text_tokens, 4096),
        "pooled_projections": torch.randn(b, 768),
        "timestep": torch.full((b,), 0.5),
        "guidance": torch.full((b,), 3.5),
        "img_ids": torch.zeros(f.image_tokens, 3),
        "txt_ids": torch.zeros(f.text_tokens, 3),
    }
    return model, inputs, {"double": list(model.transformer_blocks), "single": list(model.single_transformer_blocks)}


def measure_family(f: Family, repeats: int) -> tuple[float, dict[str, float]]:
    """(seconds of the rest of one forward step, seconds per block of each kind), medians."""
    model, inputs, kinds = build(f)
    model.eval()
    spans: dict[str, list[float]] = {kind: [] for kind in kinds}
    for kind, blocks in kinds.items():
        for block in blocks:
            block.register_forward_pre_hook(lambda *_: spans.setdefault("_start", []).append(time.perf_counter()))
            block.register_forward_hook(lambda *_, k=kind: spans[k].append(time.perf_counter() - spans["_start"][-1]))
    rests = []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            model(**inputs)
            rests.append(time.perf_counter() - start - sum(spans[kind][-1] for kind in kinds))
    return statistics.median(rests), {kind: statistics.median(spans[kind]) for kind in kinds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scaling.md"))
    args = parser.parse_args()
    torch.manual_seed(0)
    lines = [
        f"# Scale-out sizing ({platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}; medians of {args.repeats})",
        "",
    ]

    tiny = measure_tiny(args.repeats)
    lines += [
        "## Measured: bundled digits DiT (d 96), 32 images x 50 steps x 2 CFG branches, 4 of 64 tokens",
        "",
        "| job | seconds | rows / s | bytes / row on disk | time vs plain sampling |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, seconds, rate, per_row in tiny:
        cells = (f"{rate:,.0f}", f"{per_row:.0f}") if rate else ("-", "-")
        lines.append(f"| {name} | {seconds:.2f} | {cells[0]} | {cells[1]} | {seconds / tiny[0][1]:.2f}x |")
    raw16 = 2 * 96 + METADATA_BYTES
    lines += [
        "",
        f"float16 raw bytes per row: {raw16} (activations {2 * 96} + metadata {METADATA_BYTES}); parquet "
        f"stores {tiny[2][3] / raw16:.2f}x that.",
        "",
    ]

    step_seconds: dict[str, float] = {}
    lines += [
        "## Measured: one forward step at real width (random weights, one block of each kind)",
        "",
        "| model | width | tokens (image + text) | batch | rest of the step (s) | per block (s) "
        "| full depth, one step (s) |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for family_name in MEASURED.values():
        f = FAMILIES[family_name]
        rest, per_block = measure_family(f, args.repeats)
        full = rest + sum(per_block[kind] * count for kind, count in f.blocks.items())
        step_seconds[f.name] = full
        blocks = ", ".join(f"{kind} {seconds:.3f} (x{f.blocks[kind]})" for kind, seconds in per_block.items())
        lines.append(
            f"| {family_name} | {f.width} | {f.image_tokens} + {f.text_tokens} | {f.branches} | {rest:.3f} | "
            f"{blocks} | {full:.2f} |"
        )

    lines += [
        "",
        "## Sizing (1/16 of the image tokens kept per image and step, 50 steps, float16/bfloat16 storage)",
        "",
        "| model | d_model | image tokens / image / step | kept rows / image / step (CFG rows) "
        "| bytes / token fp16 = bf16 | disk / 1e9 tokens | images per shard | shard size "
        "| CPU time / 1e9 kept tokens | H100 estimate / 1e9 kept tokens |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, f in FAMILIES.items():
        kept = f.image_tokens // 16 * f.branches  # rows per image and step
        row_bytes = 2 * f.width + METADATA_BYTES
        shard = f.images_per_shard * STEPS * kept * row_bytes
        measured = FAMILIES[MEASURED[f.name]]
        flops = sum(block_flops(f) * count for count in f.blocks.values()) * f.branches  # one image, one step
        cpu_step = (
            step_seconds[f.name]
            * flops
            / (sum(block_flops(measured) * c for c in measured.blocks.values()) * measured.branches)
        )
        cpu_days = cpu_step / kept * 1e9 / 86400
        gpu_hours = flops / (H100_BF16_FLOPS * ASSUMED_UTILISATION) / kept * 1e9 / 3600
        source = "measured" if name in MEASURED.values() else "scaled"
        lines.append(
            f"| {name} | {f.width} | {f.image_tokens} | {kept} | {2 * f.width} + {METADATA_BYTES} | "
            f"{row_bytes * 1e9 / 1e12:.2f} TB | {f.images_per_shard} | {shard / 1e6:,.0f} MB | "
            f"{cpu_days:,.0f} days ({source}) | {gpu_hours:.1f} h |"
        )
    lines += [
        "",
        "CPU times: the measured step of the family's first row, scaled by the FLOP model "
        "(`block_flops`) for other token counts. H100: FLOPs at "
        f"{ASSUMED_UTILISATION:.0%} of the bf16 dense peak ({H100_BF16_FLOPS / 1e12:.0f} TFLOPS), not "
        "measured; transformer forward only (no VAE decode, text encoder or parquet writing).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
