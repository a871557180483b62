"""The one eval.json layout: what write_eval_files writes, read back by hand with json, and the
runner's layout of before 0.2 still read (the bundled releases and older runs hold it)."""

import json
from dataclasses import asdict

import pytest

from sae_lens_dit.analysis.evals import EvalConfig, read_eval_file, write_eval_files

REPORT = {
    "sae": "blocks.1.hook_resid_post/tide",
    "model": "digits",
    "hook": "blocks.1.hook_resid_post",
    "architecture": "tide",
    "d_sae": 192,
    "buckets": [{"t_low": 0.0, "t_high": 200.0, "rows": 10, "l0": 8.0}],
}


def test_written_files_hold_config_reports_and_markdown(tmp_path):
    cfg = EvalConfig(num_images=4, num_samples=0)
    json_path, md_path = write_eval_files(tmp_path, [REPORT], cfg, "| table |")
    assert (json_path, md_path) == (tmp_path / "eval.json", tmp_path / "eval.md")
    written = json.loads(json_path.read_text())
    assert written == {"config": json.loads(json.dumps(asdict(cfg))), "reports": [REPORT]}
    assert md_path.read_text() == "| table |\n"
    results = read_eval_file(tmp_path)  # the folder or the file
    assert results == read_eval_file(json_path)
    assert results.config["num_images"] == 4 and results.single_report() == REPORT


def test_a_report_that_does_not_name_its_sae_is_refused(tmp_path):
    report = {k: v for k, v in REPORT.items() if k != "hook"}
    with pytest.raises(ValueError, match=r"reports\[0\] lacks \['hook'\]"):
        write_eval_files(tmp_path, [report], {}, "")
    assert not (tmp_path / "eval.json").exists()


def test_the_runners_layout_before_0_2_reads_as_one_report(tmp_path):
    legacy = {
        "hook_name": "blocks.1.hook_resid_post",
        "architecture": "topk",
        "buckets": REPORT["buckets"],
        "mean_explained_variance": 0.9,
        "latent_usage": None,
        "init": {},
    }
    (tmp_path / "eval.json").write_text(json.dumps(legacy))
    results = read_eval_file(tmp_path)
    assert results.config == {}
    report = results.single_report()
    assert (report["sae"], report["hook"]) == ("blocks.1.hook_resid_post/topk", "blocks.1.hook_resid_post")
    assert report["buckets"] == legacy["buckets"] and report["mean_explained_variance"] == 0.9


def test_single_report_of_several_and_foreign_files_are_clear_errors(tmp_path):
    write_eval_files(tmp_path, [REPORT, {**REPORT, "sae": "other"}], {}, "")
    with pytest.raises(ValueError, match="expected one SAE's report, found 2"):
        read_eval_file(tmp_path).single_report()
    (tmp_path / "eval.json").write_text(json.dumps({"something": "else"}))
    with pytest.raises(ValueError, match="not an evaluation file of sae-lens-dit"):
        read_eval_file(tmp_path)
