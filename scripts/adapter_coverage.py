"""Write the coverage table of `docs/adapters.md`: every image and video transformer class of the installed
diffusers, and the shipped adapter that hooks it (or why none does).

Why generated: the table must follow `adapters/*.yaml` as files are added; `--check` (run by the test suite)
fails when the committed table is stale.

    python scripts/adapter_coverage.py            # rewrite the table in docs/adapters.md
    python scripts/adapter_coverage.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

import diffusers
import diffusers.models.transformers as transformers

from sae_lens_dit.hooking.adapters import AdapterSpec, shipped_specs

DOC = Path(__file__).resolve().parents[1] / "docs" / "adapters.md"
BEGIN, END = "<!-- coverage:begin -->", "<!-- coverage:end -->"

NOT_IMAGE_OR_VIDEO = {
    "AceStepTransformer1DModel",
    "MiniMaxMusic3Transformer1DModel",
    "StableAudio3DiTModel",
    "StableAudioDiTModel",
    "Transformer2DModel",  # the UNets' block, not a backbone (see the UNet issue)
    "TransformerTemporalModel",
}
"""Classes of `diffusers.models.transformers` that are not image or video backbones."""

MEASURED_REASONS = {
    "LatteTransformer3DModel": "blocks alternate [B*F, HW, D] and [B*HW, F, D] layouts",
    "ChromaTransformer2DModel": "single-stream blocks hold text and image tokens in one sequence",
    "AuraFlowTransformer2DModel": "single-stream blocks hold text and image tokens in one sequence",
    "BriaFiboTransformer2DModel": "single-stream blocks hold text and image tokens in one sequence (6 text + 16 "
    "image tokens: single-block input of 22)",
    "Krea2Transformer2DModel": "single-stream blocks hold text and image tokens in one sequence (4 text + 4 image "
    "tokens: block input of 8)",
    "Ideogram4Transformer2DModel": "the cond call packs [left-padded text slots | image] into hidden_states (4 text "
    "slots + 16 image tokens: latents and block input of 20), so the latents do not count the image; the uncond call "
    "runs a second model (unconditional_transformer) on the 16 image tokens alone; reversed map 1 - sigma",
    "DreamLiteTransformer2DModel": "the attention block inside DreamLiteUNetModel's levels (Transformer2DModel's "
    "continuous branch), not a backbone: the UNet calls it without a timestep; DreamLitePipeline calls the UNet",
    "MiniMaxH3Transformer3DModel": "one packed sequence of text, video and audio rows scattered by index (6 text + 32 "
    "video + 5 audio: block input of 43); timestep holds the distinct noise levels [levels], not one per row",
    "WanAnimate2Transformer3DModel": "latents and text are passed as lists; a reference pass (kv_cache_mode "
    "'extract', timestep forced to 1) runs the same blocks before the denoising passes; the denoising self-attention "
    "needs flex attention's compiled block mask (read from the source, not run on CPU)",
    "AnyFlowFARTransformer3DModel": "cache-prefill calls join FAR-compressed context frames ((1, 4, 4) patches: 4 "
    "tokens per 8x8 latent frame) and full frames ((1, 2, 2): 16 per frame) in one token axis; the steps see one "
    "chunk against a KV cache and return (sample, kv_cache) (read from the source, not run)",
}
"""Why a class has no adapter, where that was measured on a tiny config (issue 17)."""

PARTIAL: dict[str, str] = {}
"""Classes whose adapter hooks only part of the model, and what is left out."""


def backbone_classes() -> list[str]:
    """Names of the image and video transformer classes defined in `diffusers.models.transformers`."""
    names = set()
    for info in pkgutil.iter_modules(transformers.__path__):
        module = importlib.import_module(f"{transformers.__name__}.{info.name}")
        for name, obj in vars(module).items():
            defined_here = inspect.isclass(obj) and obj.__module__ == module.__name__
            if (
                defined_here
                and hasattr(obj, "config_name")
                and name.endswith("Model")
                and name not in NOT_IMAGE_OR_VIDEO
            ):
                names.add(name)
    return sorted(names)


def _timestep(spec: AdapterSpec) -> str:
    ts = spec.timestep
    if getattr(ts, "map", "affine") != "affine":
        return f"`{ts.map}`"
    offset = getattr(ts, "offset", 0.0)
    text = f"raw x {ts.scale:g}" + (f" / config.{ts.divide_by_config}" if ts.divide_by_config else "")
    return f"{offset:g} + {text}" if offset else text


def table() -> str:
    specs = shipped_specs()
    rows = ["| class | adapter | timestep map (to [0, 1000], 1000 = noise) | CFG |", "| --- | --- | --- | --- |"]
    covered = 0
    classes = backbone_classes()
    for name in classes:
        claims = [s for s in specs if name in s.transformer_classes]
        if claims:
            covered += 1
            for spec in claims:
                cfg = spec.guidance.detect + (", separate calls" if spec.guidance.separate_calls else "")
                cfg += f", thirds with {spec.guidance.thirds_when}" if spec.guidance.thirds_when else ""
                partial = f" (partial: {PARTIAL[name]})".replace("|", "\\|") if name in PARTIAL else ""
                rows.append(f"| {name} | `{spec.name}.yaml`{partial} | {_timestep(spec)} | {cfg} |")
        else:
            reason = MEASURED_REASONS.get(name, "not checked yet").replace("|", "\\|")
            rows.append(f"| {name} | none | {reason} | |")
    head = (
        f"{covered} of the {len(classes)} image and video transformer classes of diffusers {diffusers.__version__} "
        f"have an adapter, each tested exact on a tiny config (`tests/hooking/`)."
    )
    return "\n".join([head, "", *rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/adapters.md's table is out of date")
    args = parser.parse_args()
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    new = text[:start] + "\n" + table() + "\n" + text[end:]
    if args.check:
        if new != text:
            print("docs/adapters.md is out of date: run python scripts/adapter_coverage.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
