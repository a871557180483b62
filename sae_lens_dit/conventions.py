"""Every convention the package shares, in one home: the timestep scale, CFG branches, timestep
buckets and latent profiles, architecture names, the default hook, and the names of files it writes.

Why one module: each of these facts used to be written in several places (the timestep maximum in
five files, the branch labels in two orders, "tide" in four files), and a change to one copy left
the others silently wrong. Every other module imports them from here; this module imports nothing
from the package.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol, get_args, runtime_checkable

# --- timesteps -----------------------------------------------------------------------------------

TIMESTEP_MAX = 1000.0
"""Top of the package's timestep scale: DDPM training scale, t in [0, TIMESTEP_MAX], TIMESTEP_MAX = pure noise.
Flow-matching backbones are rescaled to it by their adapter."""

TIMESTEP_CONVENTION = "DDPM training scale: float t in [0, 1000], 1000 = pure noise"
"""The timestep convention of TIDE SAEs and HookedDiT, as recorded in SAE metadata and releases."""

DEFAULT_BUCKET_EDGES: tuple[float, ...] = (0.0, 200.0, 400.0, 600.0, 800.0, 1000.0)
"""Edges of the timestep buckets every report is split into (five buckets of 200)."""

TimestepProfile = Literal["early", "late", "persistent", "dead"]
"""When in denoising a latent fires: mostly at noisy timesteps, mostly near the image, across the
trajectory, or never."""
PROFILES: tuple[str, ...] = get_args(TimestepProfile)


@runtime_checkable
class TimestepConditioned(Protocol):
    """An SAE whose encoding depends on the denoising timestep (TIDE): `at_timestep(t)` sets the timestep
    that plain `sae(x)` / `sae.encode(x)` calls use inside the context (one number, or one per row)."""

    def at_timestep(self, timestep: Any) -> AbstractContextManager[None]: ...


def timestep_scope(sae: Any, timestep: Any) -> AbstractContextManager[None]:
    """`sae.at_timestep(timestep)` for timestep-conditioned SAEs; a no-op context for SAELens's plain ones."""
    if isinstance(sae, TimestepConditioned):
        return sae.at_timestep(timestep)
    return contextlib.nullcontext()


# --- classifier-free guidance --------------------------------------------------------------------

Branch = Literal["cond", "uncond", "both"]
"""Which CFG branch a recording, harvest or edit covers."""
BRANCHES: tuple[str, ...] = get_args(Branch)

COND, UNCOND = 0, 1
"""Branch labels of recorded rows: 0 = conditional, 1 = unconditional (all 0 without guidance); see IMAGE_COND."""
BRANCH_NAMES: tuple[str, str] = ("cond", "uncond")
"""The name of each row label: BRANCH_NAMES[COND] == "cond"."""
IMAGE_COND = 2
"""Row label of the third part of three-way guidance: OmniGen with input images runs [cond | uncond | image_cond],
image_cond conditioned on the input images without the text. Recordings of `branch="cond"` or `"uncond"` leave
these rows out; `"both"` keeps them, labelled 2."""
ROW_LABELS: dict[str, int] = {"cond": COND, "uncond": UNCOND, "image_cond": IMAGE_COND}
"""Every row label by name (adapter YAMLs name them: `guidance.thirds`)."""

CfgOrder = Literal["cond_first", "uncond_first"]
"""How a pipeline lays out a CFG batch (or its two CFG calls): which branch comes first."""


def branch_label(branch: Literal["cond", "uncond"]) -> int:
    """The row label (COND or UNCOND) of a one-branch name."""
    return COND if branch == "cond" else UNCOND


def branch_order(order: CfgOrder) -> tuple[int, int]:
    """(first, second) branch labels of a CFG batch or call pair laid out in `order`."""
    return (COND, UNCOND) if order == "cond_first" else (UNCOND, COND)


# --- names -------------------------------------------------------------------------------------

TIDE_ARCHITECTURE = "tide"
"""The architecture name TIDE SAEs register with SAELens (`cfg.architecture`, `--architecture`)."""

TIDE_TRANSCODER_ARCHITECTURE = "tide_transcoder"
"""The architecture name of TIDE transcoders (MLP input -> MLP output, timestep-modulated) in SAELens."""

DEFAULT_HOOK = "blocks.2.hook_resid_post"
"""The hook the default run, harvest and CLI use when none is given."""

DEFAULT_MODEL = "digits"
"""The backbone of the default run: the bundled, trained digits DiT."""


def sae_id(hook: str, architecture: str) -> str:
    """The id of one SAE in a release, a report, a dashboard and a published repo: `<hook>/<architecture>`."""
    return f"{hook}/{architecture}"


def sublayer_pair(sublayer: str) -> tuple[str, str]:
    """The (input, output) hooks of a sublayer, the pair a transcoder reads and writes:
    `blocks.2.mlp` -> (`blocks.2.mlp.hook_in`, `blocks.2.mlp.hook_out`)."""
    return f"{sublayer}.hook_in", f"{sublayer}.hook_out"


def sae_display_name(sae: Any) -> str:
    """`sae_id` of a loaded SAELens SAE (from its `cfg.metadata.hook_name` and architecture); a transcoder of a
    sublayer (`blocks.2.mlp.hook_in` -> `blocks.2.mlp.hook_out`) is named by the sublayer, as it was trained:
    `blocks.2.mlp/tide_transcoder`."""
    hook, out = sae.cfg.metadata.hook_name, getattr(sae.cfg.metadata, "hook_name_out", None)
    sublayer = hook.rsplit(".", 1)[0]
    if out and (hook, out) == sublayer_pair(sublayer):
        hook = sublayer
    return sae_id(hook, sae.cfg.architecture())


# --- files the package writes ---------------------------------------------------------------------

SAE_CONFIG_FILENAME = "cfg.json"
"""SAELens's config file of a saved SAE (with `sae_weights.safetensors`)."""
EVAL_JSON = "eval.json"
"""Evaluation results, one layout for the runner and `sae-lens-dit eval`."""
EVAL_MD = "eval.md"
"""The same results as Markdown tables."""
HARVEST_CONFIG_FILENAME = "harvest_config.json"
"""The harvest config an activation cache was made with (a rebuild with other settings is refused)."""
DATA_STATE_FILENAME = "data_state.json"
"""Where the training data stream stood at the last checkpoint (for resuming)."""
RELEASES_FILENAME = "releases.yaml"
"""The release registry under `pretrained/`."""
CARD_FILENAME = "README.md"
"""The model card written next to a published SAE."""
RELEASE_ENTRY_FILENAME = "release.yaml"
"""The `releases.yaml` entry `publish` writes for a published SAE."""
CONCEPTS_DIR = "concepts"
"""The folder of a release's named steering concepts (beside its SAEs)."""
CONCEPTS_INDEX = "index.json"
"""The index of a concepts folder (name -> spec file, tuned value and window)."""
