"""`sae-lens-dit releases` and `sae-lens-dit publish`: the pretrained dictionaries, listed and published.

Why a module of its own: both commands are about releases (`pretrained/releases.yaml` and the Hub),
not about a backbone or a training run, and neither loads a model.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import yaml

from sae_lens_dit.conventions import RELEASE_ENTRY_FILENAME


def add_commands(sub: argparse._SubParsersAction) -> None:
    releases = sub.add_parser("releases", help="List the pretrained releases registered with SAE.from_pretrained")
    releases.add_argument("--release", help="Show one release in full (every field of its entry)")
    releases.set_defaults(run=_releases)

    publish = sub.add_parser("publish", help="Runner output folder(s) -> a Hub repo in SAELens's layout, with a card")
    publish.add_argument(
        "--sae", nargs="+", required=True, type=Path, help="Runner output folder(s) (sae-lens-dit train)"
    )
    publish.add_argument("--repo-id", required=True, help="Hub repo to publish to, owner/name")
    publish.add_argument("--release", help="Release id of the releases.yaml entry; default tide-<model>/<repo name>")
    publish.add_argument("--output-dir", required=True, type=Path, help="New folder for the repo's files")
    publish.add_argument("--dry-run", action="store_true", help="Write the folder only; upload nothing")
    publish.set_defaults(run=_publish)


def _releases(args: argparse.Namespace) -> None:
    from sae_lens_dit.hub.releases import get_release, list_releases

    if args.release:
        release = get_release(args.release)
        print(yaml.safe_dump({release.id: asdict(release)}, sort_keys=False, width=1000))
        return
    rows = [("release", "status", "source", "sae id", "explained var", "L0", "dead", "dense")]
    for release_id in list_releases():
        release = get_release(release_id)
        source = f"bundled ({release.bundled})" if release.bundled else f"hub {release.repo_id}"
        source += f"@{release.revision[:12]}" if release.revision else ""
        for sae in release.saes:
            values = (sae.variance_explained, sae.l0, sae.dead_fraction, sae.dense_fraction)
            metrics = [f"{value:.4g}" if value is not None else "-" for value in values]
            rows.append((release.id, release.status, source, sae.id, *metrics))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print('\nLoad one with: import sae_lens_dit; SAE.from_pretrained("<release>", "<sae id>")')


def _publish(args: argparse.Namespace) -> None:
    from sae_lens_dit.hub.publish import publish

    out, revision = publish(args.sae, args.repo_id, args.output_dir, release_id=args.release, dry_run=args.dry_run)
    if revision is None:
        print(f"wrote {out} (dry run: nothing uploaded); its files are exactly what would go to {args.repo_id}")
    else:
        print(f"published {out} to https://huggingface.co/{args.repo_id} at commit {revision}")
    print(f"releases.yaml entry to add (also in {out / RELEASE_ENTRY_FILENAME}):\n")
    print((out / RELEASE_ENTRY_FILENAME).read_text())
