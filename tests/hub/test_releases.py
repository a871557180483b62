"""releases.yaml: shipped releases load through SAE.from_pretrained, entries are validated one by
one, and SAELens's own releases are never disturbed."""

from __future__ import annotations

import json
import shlex
import warnings
from pathlib import Path

import pytest
import yaml
from sae_lens import SAE
from sae_lens.loading.pretrained_sae_loaders import NAMED_PRETRAINED_SAE_LOADERS, load_sae_config_from_huggingface
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

import sae_lens_dit
from sae_lens_dit.analysis.evals import read_eval_file
from sae_lens_dit.cli import build_parser, configs_from_args
from sae_lens_dit.hub.releases import (
    LOADER_PREFIX,
    ReleaseNotPublishedError,
    ReleaseRegistryWarning,
    get_release,
    register_releases,
)
from sae_lens_dit.resources import pretrained_dir
from sae_lens_dit.training.harvest import HarvestConfig
from sae_lens_dit.training.runner import PRESETS
from sae_lens_dit.training.sublayers import sublayer_hooks

from .conftest import assert_same_outputs

SHIPPED = yaml.safe_load((pretrained_dir() / "releases.yaml").read_text())
BUNDLED = [(rid, sae["id"]) for rid, entry in SHIPPED.items() if "bundled" in entry["source"] for sae in entry["saes"]]
SAELENS_RELEASE = "gpt2-small-res-jb"


def _bundled_folder(release_id: str, sae_id: str) -> Path:
    entry = SHIPPED[release_id]
    path = next(sae["path"] for sae in entry["saes"] if sae["id"] == sae_id)
    return pretrained_dir() / entry["source"]["bundled"] / path


def _hooks_recorded(release_id: str, sae_id: str) -> list[str]:
    """The hooks a bundled dictionary was trained on: its hook, and a transcoder's output hook."""
    meta = json.loads((_bundled_folder(release_id, sae_id) / "cfg.json").read_text())["metadata"]
    return [meta["hook_name"], *([meta["hook_name_out"]] if meta.get("hook_name_out") else [])]


def test_every_shipped_release_is_registered_next_to_saelens_own():
    assert sae_lens_dit.list_releases() == {rid: [sae["id"] for sae in entry["saes"]] for rid, entry in SHIPPED.items()}
    directory = get_pretrained_saes_directory()
    assert SAELENS_RELEASE in directory
    assert directory[SAELENS_RELEASE].conversion_func is None  # SAELens's own entry, untouched
    for release_id in SHIPPED:
        assert directory[release_id].conversion_func == LOADER_PREFIX + release_id
        assert LOADER_PREFIX + release_id in NAMED_PRETRAINED_SAE_LOADERS
    assert {"tide-dit-tiny/digits", "tide-dit-tiny/shapes", "tide-dit-xl/256"} <= set(SHIPPED)


@pytest.mark.parametrize(("release_id", "sae_id"), BUNDLED)
def test_bundled_sae_loads_offline_as_the_folder_it_names(release_id, sae_id):
    sae, cfg, log_sparsity = SAE.from_pretrained_with_cfg_and_sparsity(release_id, sae_id)
    folder = _bundled_folder(release_id, sae_id)
    assert_same_outputs(sae, SAE.load_from_disk(str(folder)))
    assert log_sparsity is not None and log_sparsity.shape == (sae.cfg.d_sae,)
    assert load_sae_config_from_huggingface(release_id, sae_id)["d_sae"] == sae.cfg.d_sae


@pytest.mark.parametrize(("release_id", "sae_id"), BUNDLED)
def test_bundled_entries_agree_with_their_files(release_id, sae_id):
    sae = get_release(release_id).sae(sae_id)
    folder = _bundled_folder(release_id, sae_id)
    cfg = json.loads((folder / "cfg.json").read_text())
    report = read_eval_file(folder).single_report()  # the one eval.json layout
    read = sublayer_hooks(report["hook"])[0]  # a transcoder's report names its sublayer (blocks.2.mlp), reading hook_in
    assert (report["sae"], report["architecture"], read) == (sae_id, sae.architecture, sae.hook)
    assert (cfg["architecture"], cfg["metadata"]["hook_name"]) == (sae.architecture, sae.hook)
    assert cfg["metadata"]["model_name"] == SHIPPED[release_id]["model"]
    # one harvest's settings per release (hook_names: the release's hooks); an SAE may come from a harvest of those
    # settings recording other hooks (the same images, timesteps and tokens: a batch's seed is the seed's and index's)
    harvest, shipped = cfg["metadata"]["harvest"], SHIPPED[release_id]["harvest"]
    assert {**harvest, "hook_names": None} == {**shipped, "hook_names": None}
    assert sae.hook in harvest["hook_names"]
    hooks = {h for s in SHIPPED[release_id]["saes"] for h in _hooks_recorded(release_id, s["id"])}
    assert set(shipped["hook_names"]) == hooks and len(shipped["hook_names"]) == len(hooks)
    assert sae.variance_explained == pytest.approx(report["mean_explained_variance"], abs=5e-5)
    rows = sum(b["rows"] for b in report["buckets"])
    assert sae.l0 == pytest.approx(sum(b["l0"] * b["rows"] for b in report["buckets"]) / rows, abs=5e-3)
    root = pretrained_dir() / SHIPPED[release_id]["source"]["bundled"]
    protocol = json.loads((root / "eval_protocol.json").read_text())
    (denoising,) = [r["denoising"] for r in protocol["reports"] if r["sae"] == sae_id]
    recovered = sum(row["recovered_vs_mean"] for row in denoising) / len(denoising)
    assert sae.denoising_loss_recovered == pytest.approx(recovered, abs=5e-5)
    usage = report["latent_usage"]
    assert (sae.dead_fraction, sae.dense_fraction) == pytest.approx(
        (usage["dead_fraction"], usage["dense_fraction"]), abs=5e-5
    )


@pytest.mark.parametrize(("release_id", "sae_id"), BUNDLED)
def test_bundled_dictionaries_have_live_latents(release_id, sae_id):
    """Every bundled SAE, TIDE and TopK alike: at most 5% of latents dead and at most 2% firing on more than 10% of
    rows, counted on at least 100k fresh held-out rows (every timestep, both CFG branches) by the runner that
    trained it (issue 22). Transcoders miss those bounds and are held to 10% and 5%: their dense latents fire alike
    at every timestep, class and branch but on 20-40 of the 64 token positions, and neither 8M rows nor a smaller
    dictionary removed them (the transcoder releases' cards)."""
    folder = _bundled_folder(release_id, sae_id)
    usage = read_eval_file(folder).single_report()["latent_usage"]
    assert usage["rows"] >= 100_000
    assert json.loads((folder / "runner_cfg.json").read_text())["harvest"]["branch"] == "both"
    transcoder = "hook_name_out" in json.loads((folder / "cfg.json").read_text())["metadata"]
    assert usage["dead_fraction"] <= (0.10 if transcoder else 0.05), usage
    assert usage["dense_fraction"] <= (0.05 if transcoder else 0.02), usage


def test_unknown_sae_id_lists_the_release_ids():
    with pytest.raises(ValueError, match="Valid IDs are"):
        SAE.from_pretrained("tide-dit-tiny/digits", "blocks.9.hook_resid_post/tide")


def test_unpublished_release_says_so_with_the_commands_that_make_it():
    release = get_release("tide-dit-xl/256")
    with pytest.raises(ReleaseNotPublishedError, match="not yet published") as error:
        SAE.from_pretrained("tide-dit-xl/256", release.saes[0].id)
    assert release.training_command in str(error.value) and release.publish_command in str(error.value)


def test_unpublished_commands_train_the_preset_hooks_and_publish_their_output_folders():
    release = get_release("tide-dit-xl/256")
    train = build_parser().parse_args(shlex.split(release.training_command)[1:])
    configs = configs_from_args(train)
    preset = PRESETS[train.preset]
    assert train.preset == "dit-xl-2-256"
    assert {c.hook_name for c in configs} == {s.hook for s in release.saes} == set(preset["harvest"]["hook_names"])
    assert {c.sae.architecture() for c in configs} == {s.architecture for s in release.saes}
    assert len({c.cache_dir for c in configs}) == 1 and configs[0].data_mode == "cached"  # one harvest for all
    assert release.harvest == json.loads(json.dumps(configs[0].harvest.to_dict()))
    assert release.model == preset["model"]
    publish = build_parser().parse_args(shlex.split(release.publish_command)[1:])
    assert sorted(map(str, publish.sae)) == sorted(c.output_dir for c in configs)
    assert (publish.repo_id, publish.release) == (release.repo_id, release.id)


GOOD = {
    "status": "published",
    "source": {"bundled": "saes/tide-dit-tiny-digits"},
    "model": "digits",
    "backbone": "tiny",
    "adapter": "dit",
    "timestep_convention": "DDPM training scale: float t in [0, 1000], 1000 = pure noise",
    "cfg_branch": "both",
    "harvest": HarvestConfig().to_dict(),
    "saes": [
        {
            "id": "a",
            "path": "blocks.1.hook_resid_post/tide",
            "hook": "blocks.1.hook_resid_post",
            "architecture": "tide",
            "variance_explained": 0.9,
            "l0": 16,
            "denoising_loss_recovered": None,
        }
    ],
    "training_command": "sae-lens-dit train",
}
MALFORMED = {  # release id -> (field named in the warning, how the entry is broken)
    "tide-test/bad-status": ("status", {"status": "done"}),
    "tide-test/bad-branch": ("cfg_branch", {"cfg_branch": "positive"}),
    "tide-test/bad-convention": ("timestep_convention", {"timestep_convention": "t in [0, 1]"}),
    "tide-test/no-model": ("model", {"model": None}),
    "tide-test/bad-adapter": ("adapter", {"adapter": "unet"}),
    "tide-test/bad-folder": ("source.bundled", {"source": {"bundled": "saes/nowhere"}}),
    "tide-test/two-sources": ("source", {"source": {"bundled": "x", "hub": {"repo_id": "a/b"}}}),
    "tide-test/unpinned": ("source.hub.revision", {"source": {"hub": {"repo_id": "a/b", "revision": "main"}}}),
    "tide-test/bad-metric": ("saes[0].l0", {"saes": [{**GOOD["saes"][0], "l0": "sixteen"}]}),
    "tide-test/bool-metric": ("saes[0].l0", {"saes": [{**GOOD["saes"][0], "l0": True}]}),
    "tide-test/bad-hook": ("saes[0].hook", {"saes": [{**GOOD["saes"][0], "hook": "layer1"}]}),
    "tide-test/bad-arch": ("saes[0].architecture", {"saes": [{**GOOD["saes"][0], "architecture": "tidal"}]}),
    "tide-test/bad-path": ("saes[0].path", {"saes": [{**GOOD["saes"][0], "path": "blocks.9/tide"}]}),
    "tide-test/extra-field": ("colour", {"colour": "red"}),
    "tide-test/unmeasured": ("saes[0].variance_explained", {"saes": [{**GOOD["saes"][0], "variance_explained": None}]}),
    "tide-test/bad-dead": ("saes[0].dead_fraction", {"saes": [{**GOOD["saes"][0], "dead_fraction": "low"}]}),
    "not-a-tide-id": ("id", {}),
}


def _write_releases(tmp_path: Path, entries: dict) -> Path:
    # bundled folders are looked up next to the releases file: point it at the shipped ones
    (tmp_path / "saes").symlink_to(pretrained_dir() / "saes")
    path = tmp_path / "releases.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path


def test_malformed_entries_are_reported_by_id_and_field_and_skipped(tmp_path, restore_shipped_releases):
    entries = {"tide-test/good": GOOD, **{rid: {**GOOD, **change} for rid, (_, change) in MALFORMED.items()}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registered = register_releases(_write_releases(tmp_path, entries))
    messages = [str(w.message) for w in caught if issubclass(w.category, ReleaseRegistryWarning)]
    assert len(messages) == len(MALFORMED)
    for release_id, (field_name, _) in MALFORMED.items():
        assert any(f"release {release_id!r}" in m and repr(field_name) in m for m in messages), release_id
    assert list(registered) == ["tide-test/good"]
    assert sae_lens_dit.list_releases() == {"tide-test/good": ["a"]}
    directory = get_pretrained_saes_directory()
    assert SAELENS_RELEASE in directory and "tide-dit-tiny/digits" not in directory  # replaced, not merged
    folder = pretrained_dir() / GOOD["source"]["bundled"] / GOOD["saes"][0]["path"]
    assert_same_outputs(SAE.from_pretrained("tide-test/good", "a"), SAE.load_from_disk(str(folder)))


def test_an_unreadable_file_registers_nothing_and_warns(tmp_path, restore_shipped_releases):
    path = tmp_path / "releases.yaml"
    path.write_text("tide-x/y: [unclosed")
    with pytest.warns(ReleaseRegistryWarning, match="cannot read it"):
        assert register_releases(path) == {}
    assert SAELENS_RELEASE in get_pretrained_saes_directory()


def test_a_release_cannot_shadow_a_saelens_release(tmp_path, restore_shipped_releases):
    before = get_pretrained_saes_directory()[SAELENS_RELEASE]
    path = _write_releases(tmp_path, {"tide-test/good": GOOD})
    path.write_text(path.read_text().replace("tide-test/good", "tide-test/" + SAELENS_RELEASE))
    get_pretrained_saes_directory()["tide-test/" + SAELENS_RELEASE] = before  # a name SAELens already uses
    try:
        with pytest.warns(ReleaseRegistryWarning, match="SAELens already has a release of this name"):
            register_releases(path)
        assert get_pretrained_saes_directory()["tide-test/" + SAELENS_RELEASE] is before
    finally:
        del get_pretrained_saes_directory()["tide-test/" + SAELENS_RELEASE]


def test_registering_again_is_idempotent():
    directory = get_pretrained_saes_directory()
    size, loaders = len(directory), len(NAMED_PRETRAINED_SAE_LOADERS)
    register_releases()
    register_releases()
    assert (len(directory), len(NAMED_PRETRAINED_SAE_LOADERS)) == (size, loaders)
    assert sae_lens_dit.list_releases() == {rid: [sae["id"] for sae in entry["saes"]] for rid, entry in SHIPPED.items()}


def test_every_hook_of_a_dit_and_of_sd_and_sdxl_unets_is_a_valid_release_hook():
    from sae_lens_dit import HookedDiT
    from sae_lens_dit.hub.release_schema import HOOK_NAME
    from sae_lens_dit.toy.random_dit import random_dit
    from sae_lens_dit.toy.random_unet import random_unet

    for model in (random_dit(), random_unet("sd"), random_unet("sdxl")):
        names = HookedDiT(model).hook_names
        assert names and all(HOOK_NAME.match(name) for name in names), [n for n in names if not HOOK_NAME.match(n)]
    for name in ("layer1", "blocks.hook_resid_post", "down.2.1", "blocks.1..hook_out", "Blocks.1.hook_out"):
        assert not HOOK_NAME.match(name), name
