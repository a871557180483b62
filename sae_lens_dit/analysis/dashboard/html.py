"""HTML of the feature dashboards (`sae_lens_dit.analysis.dashboard.build`): pure functions from plain data to pages.

Pages link each other and `assets/` by relative paths, so the site works from file:// and from any
static server. Tables are rendered here, in full, so the index reads without JavaScript;
`assets/site.js` only sorts and filters rows. Plots are inline SVG with the timestep axis running
from 1000 (noise, left) to 0 (image, right), the direction of denoising.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from sae_lens_dit.analysis.evals import DENSE_THRESHOLD
from sae_lens_dit.conventions import TIMESTEP_MAX

PLOT_SIZE = (360, 170)
PLOT_MARGIN = (48, 12, 14, 34)  # left, right, top, bottom


def _page(title: str, body: str, root: str) -> str:
    """A whole page; `root` is the relative path from the page to the site root ("" or "../..")."""
    prefix = f"{root}/" if root else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<link rel="icon" href="data:,">\n<link rel="stylesheet" href="{prefix}assets/style.css">\n'
        f'<script src="{prefix}assets/site.js" defer></script>\n</head>\n<body>\n{body}\n</body>\n</html>\n'
    )


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _x(t: float) -> float:
    left, right = PLOT_MARGIN[0], PLOT_SIZE[0] - PLOT_MARGIN[1]
    return left + (TIMESTEP_MAX - t) / TIMESTEP_MAX * (right - left)


def line_plot_svg(t: Sequence[float], values: Sequence[float], label: str, color: str) -> str:
    """An inline SVG line plot of `values` against timesteps `t` (1000 on the left), with axes and tooltips."""
    width, height = PLOT_SIZE
    left, right, top, bottom = PLOT_MARGIN
    y_max = max(max(values, default=0.0), 0.0) * 1.1 or 1.0

    def y(v: float) -> float:
        return top + (1.0 - v / y_max) * (height - top - bottom)

    points = " ".join(f"{_x(a):.1f},{y(v):.1f}" for a, v in zip(t, values, strict=True))
    parts = [
        f'<svg class="plot" role="img" aria-label="{escape(label)} against timestep" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<line class="axis" x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}"/>',
        f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}"/>',
    ]
    for tick in (1000, 750, 500, 250, 0):
        parts.append(
            f'<text class="tick" x="{_x(tick):.1f}" y="{height - bottom + 13}" text-anchor="middle">{tick}</text>'
        )
    for frac in (0.0, 0.5, 1.0):
        v = y_max / 1.1 * frac
        parts.append(f'<text class="tick" x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    parts.append(
        f'<text class="label" x="{(left + width - right) / 2:.0f}" y="{height - 3}" text-anchor="middle">'
        f"timestep (1000 = noise) &#8594; denoising</text>"
    )
    parts.append(f'<text class="label" x="{left + 4}" y="{top + 10}">{escape(label)}</text>')
    parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
    for a, v in zip(t, values, strict=True):
        parts.append(
            f'<circle cx="{_x(a):.1f}" cy="{y(v):.1f}" r="3" fill="{color}"><title>t {a:.0f}: '
            f"{_fmt(v)}</title></circle>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def sparkline_svg(values: Sequence[float]) -> str:
    """A tiny SVG of firing frequency per bucket, noise on the left, scaled to its own maximum."""
    top = max(max(values, default=0.0), 1e-12)
    step = 60.0 / max(len(values) - 1, 1)
    points = " ".join(f"{60.0 - i * step:.1f},{16.0 - 14.0 * v / top:.1f}" for i, v in enumerate(values))
    return (
        f'<svg class="spark" width="60" height="18" viewBox="0 0 60 18" xmlns="http://www.w3.org/2000/svg">'
        f'<polyline fill="none" stroke="#c0392b" stroke-width="1.5" points="{points}"/></svg>'
    )


def _bucket(edges: Sequence[float], b: int | None) -> str:
    """A timestep bucket's label; "-" for none (a latent that never fires has no peak)."""
    return "-" if b is None else f"{edges[b]:.0f}-{edges[b + 1]:.0f}"


def root_index(entries: Sequence[dict[str, Any]]) -> str:
    """The landing page: one line per SAE dashboard, a grid of the SAEs by layer and architecture, and a box
    that jumps to one latent id in every SAE (`assets/site.js`; rows carry their page ids)."""
    rows = "\n".join(
        f'<tr data-folder="{escape(e["folder"])}" data-name="{escape(e["name"])}" '
        f'data-pages="{" ".join(str(i) for i in e.get("page_ids", []))}">'
        f'<td><a href="{escape(e["folder"])}/index.html">'
        f"{escape(e['name'])}</a></td><td>{escape(e['model'])}"
        f"</td><td>{escape(e['architecture'])}</td><td>{e['d_sae']}</td><td>{e['images']} x {e['steps']}</td><td>"
        + ", ".join(f"{k} {v}" for k, v in e["profiles"].items())
        + "</td></tr>"
        for e in entries
    )
    body = (
        '<h1>SAE feature dashboards</h1>\n<table class="saes"><thead><tr><th>SAE</th><th>model</th>'
        "<th>architecture</th><th>latents</th><th>images x steps</th><th>timestep profiles</th></tr></thead>"
        f"\n<tbody>\n{rows}\n</tbody></table>\n"
        + _layer_grid(entries)
        + '<h2>Jump to a latent</h2>\n<form id="jump"><input id="jump-id" type="number" min="0" '
        'placeholder="latent id"> <button type="submit">show in every SAE</button></form>\n<ul id="jump-links"></ul>'
        '\n<p class="hint">Every latent page also links the same id in the other SAEs of its backbone.</p>'
    )
    return _page("SAE feature dashboards", body, "")


def _layer_grid(entries: Sequence[dict[str, Any]]) -> str:
    """SAEs by backbone and layer (rows) and architecture (columns), each cell linking the SAE's index."""
    architectures = list(dict.fromkeys(e["architecture"] for e in entries))
    cells: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for e in entries:
        cells.setdefault((e["model"], e["hook"]), {}).setdefault(e["architecture"], []).append(e)
    lines = []
    for (model, hook), by_arch in cells.items():
        links = "".join(
            "<td>"
            + " ".join(
                f'<a href="{escape(e["folder"])}/index.html">{escape(e["name"])}</a>' for e in by_arch.get(a, [])
            )
            + "</td>"
            for a in architectures
        )
        lines.append(f"<tr><td>{escape(model)}</td><td>{escape(hook)}</td>{links}</tr>")
    head = "".join(f"<th>{escape(a)}</th>" for a in architectures)
    return (
        '<h2>By layer and architecture</h2>\n<table class="grid"><thead><tr><th>model</th><th>hook</th>'
        f"{head}</tr></thead>\n<tbody>\n" + "\n".join(lines) + "\n</tbody></table>\n"
    )


def sae_index(info: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """One SAE's sortable, searchable table of every latent."""
    edges = info["edges"]
    lines = []
    for r in rows:
        name = f'<a href="latents/{r["id"]}.html">#{r["id"]}</a>' if r["page"] else f"#{r['id']}"
        peak_t = -1.0 if r["peak"] is None else edges[r["peak"]]
        lines.append(
            f'<tr data-search="#{r["id"]} {r["profile"]} {escape(r["top_class"])}" data-profile="{r["profile"]}">'
            f'<td data-value="{r["id"]}">{name}</td><td data-value="{r["profile"]}">'
            f'<span class="profile {r["profile"]}">{r["profile"]}</span></td>'
            f'<td data-value="{r["density"]:.6g}">{r["density"]:.2%}</td><td data-value="{r["max"]:.6g}">'
            f'{_fmt(r["max"])}</td><td data-value="{peak_t:.0f}">{_bucket(edges, r["peak"])}</td>'
            f'<td data-value="{escape(r["top_class"])}">{escape(r["top_class"])}</td>'
            f'<td data-value="{r["selectivity"]:.6g}">{r["selectivity"]:.2f}</td>'
            f"<td>{sparkline_svg(r['frequency'])}</td></tr>"
        )
    profiles = "".join(f'<option value="{p}">{p} ({n})</option>' for p, n in info["profiles"].items())
    body = (
        f'<p class="nav"><a href="../index.html">all dashboards</a></p>\n<h1>{escape(info["name"])}</h1>\n'
        f'<p class="meta">{escape(info["architecture"])} SAE, {info["d_sae"]} latents, on {escape(info["model"])} '
        f"{escape(info['hook'])}; statistics over {info['images']} sampled images x {info['steps']} denoising steps, "
        "every token, cond branch. Density: share of tokens on which the latent fires. Selectivity: the top "
        "class's share of the latent's mean activation over classes.</p>\n"
        f'<p class="meta usage">Dead (never fire here): {info["dead"]} of {info["d_sae"]} '
        f"({info['dead'] / info['d_sae']:.1%}); dense (fire on more than {DENSE_THRESHOLD:.0%} of tokens): "
        f"{info['dense']} ({info['dense'] / info['d_sae']:.1%}).</p>\n"
        '<div class="controls"><input id="search" type="search" placeholder="search: #id, profile, class">'
        f'<select id="profile"><option value="">all profiles</option>{profiles}</select>'
        '<span id="count"></span></div>\n'
        '<table class="latents"><thead><tr><th data-sort="number">latent</th><th data-sort="text">profile</th>'
        '<th data-sort="number">density</th><th data-sort="number">max act</th>'
        '<th data-sort="number">peak t</th><th data-sort="text">top class</th>'
        '<th data-sort="number">selectivity</th><th>frequency (1000 &#8594; 0)</th></tr></thead>\n<tbody>\n'
        + "\n".join(lines)
        + "\n</tbody></table>"
    )
    return _page(f"{info['name']}: latents", body, "..")


def _latent_link(latent: int) -> str:
    return f'<a href="{latent}.html">#{latent}</a>'


def _figure(thumb: dict[str, Any], caption: str) -> str:
    size = thumb["size"]
    width = thumb.get("width", size)  # a video preview: a strip of frames
    return (
        f'<figure><img src="{escape(thumb["src"])}" alt="{escape(caption)}" width="{width}" height="{size}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _frame(thumb: dict[str, Any]) -> str:
    """ ", frame f" for a video thumbnail (the token frame where the latent fires most), else nothing."""
    return f", frame {thumb['frame']}" if "frame" in thumb else ""


def _same_latent(latent: int, same: Sequence[tuple[str, str, bool]]) -> str:
    """Links to latent #`latent` in the sibling SAEs (other layers and architectures on the same backbone)."""
    links = " | ".join(
        f'<a href="{escape(href)}">{escape(label)}</a>'
        if has_page
        else f'{escape(label)} (<a href="{escape(href)}">no page; index</a>)'
        for label, href, has_page in same
    )
    return f'<p class="nav same-latent">#{latent} in the other SAEs: {links}</p>'


def latent_page(
    info: dict[str, Any],
    row: dict[str, Any],
    top: Sequence[dict[str, Any]],
    strip: Sequence[dict[str, Any]],
    plots: Sequence[str],
    breakdown: dict[str, dict[str, list]],
    neighbours: Sequence[tuple[int, float, bool]],
    nav: tuple[int | None, int | None],
    steering: Sequence[dict[str, Any]] | None,
    same: Sequence[tuple[str, str, bool]] = (),
) -> str:
    """One latent: its top images with heatmaps, a strip through denoising, plots, breakdowns, neighbours, and
    links to the same latent id in the sibling SAEs of the build (`same`: label, href, whether it has a page)."""
    latent, edges = row["id"], info["edges"]
    links = ['<a href="../index.html">all latents</a>']
    links += [
        f'<a href="{j}.html">{label} #{j}</a>'
        for j, label in zip(nav, ("previous", "next"), strict=True)
        if j is not None
    ]
    top_html = (
        "".join(_figure(th, f"{escape(th['label'])}, t {th['t']:.0f}{_frame(th)}, max {_fmt(th['max'])}") for th in top)
        or '<p class="empty">This latent never fires on the sampled images.</p>'
    )
    strip_html = "".join(_figure(th, f"t {th['t']:.0f}{_frame(th)}, max {_fmt(th['max'])}") for th in strip)
    strip_of = f"image {strip[0]['image']} ({escape(strip[0]['label'])})" if strip else ""
    tables = []
    for family, data in breakdown.items():
        top_mean = max(max(data["mean"]), 1e-12)
        cells = "".join(
            f'<tr><td>{escape(name)}</td><td class="bar"><span style="width:{100 * m / top_mean:.1f}%"></span>'
            f"</td><td>{_fmt(m)}</td><td>{f:.0%}</td></tr>"
            for name, m, f in zip(data["names"], data["mean"], data["fired"], strict=True)
        )
        tables.append(
            f'<table class="breakdown"><thead><tr><th>{escape(family)}</th><th colspan="2">mean '
            f"activation</th><th>images fired</th></tr></thead><tbody>{cells}</tbody></table>"
        )
    near = "".join(
        f"<li>{_latent_link(j) if has_page else f'#{j}'} cosine {cos:.3f}</li>" for j, cos, has_page in neighbours
    )
    sections = [
        f'<p class="nav">{" | ".join(links)}</p>',
        f'<h1>latent #{latent} <span class="profile {row["profile"]}">{row["profile"]}</span></h1>',
        *([_same_latent(latent, same)] if same else []),
        f'<p class="meta">{escape(info["name"])} on {escape(info["model"])}: density {row["density"]:.2%}, max '
        f"activation {_fmt(row['max'])}, fires most at t {_bucket(edges, row['peak'])}; top class "
        f"{escape(row['top_class']) or '-'} (selectivity {row['selectivity']:.2f}).</p>",
        f"<h2>Top images at t {_bucket(edges, row['peak'])}</h2>",
        "<p class=\"hint\">The model's prediction of the clean image at that step, with the latent's activation "
        "per token in red (full red = its maximum over all sampled images); of a video, the frame where it fires "
        "most.</p>",
        f'<div class="thumbs top">{top_html}</div>',
        f"<h2>Through denoising: {strip_of}</h2>",
        f'<div class="thumbs strip">{strip_html}</div>',
        "<h2>Against the timestep</h2>",
        f'<div class="plots">{"".join(plots)}</div>',
        "<h2>Class and factor breakdown</h2>",
        f'<div class="breakdowns">{"".join(tables)}</div>',
        "<h2>Nearest latents by decoder cosine</h2>",
        f'<ul class="neighbours">{near}</ul>',
    ]
    if steering:
        pairs = "".join(
            f'<div class="steer">{_figure(s["before"], "before")}{_figure(s["after"], escape(s["caption"]))}</div>'
            for s in steering
        )
        sections += ["<h2>Steering previews</h2>", f'<div class="thumbs steering">{pairs}</div>']
    return _page(f"latent #{latent} of {info['name']}", "\n".join(sections), "../..")
