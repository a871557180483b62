"""Request validation of the live explorer (no model): every bound, and one clear line per refusal."""

from __future__ import annotations

import pytest

from sae_lens_dit.analysis.explorer.requests import MAX_LATENTS, BadRequest, Limits, parse_view

LIMITS = Limits(d_sae=(32, 1536), class_labels=(0, 1, 2, 3), max_strength=50.0)


def test_a_full_view_parses():
    view = parse_view(
        {
            "sae": "1",
            "class": "2",
            "seed": "7",
            "latents": "3, 1500",
            "strength": "-2.5",
            "unit": "raw",
            "op": "clamp",
            "box": "0,0.25,0.5,1",
            "window": "200,600",
        },
        LIMITS,
    )
    assert (view.sae, view.class_label, view.seed, view.latents) == (1, 2, 7, (3, 1500))
    assert (view.strength, view.unit, view.op) == (-2.5, "raw", "clamp")
    assert view.box == (0.0, 0.25, 0.5, 1.0) and view.window == (200.0, 600.0)
    assert parse_view({"class": ["1"]}, LIMITS).window == "auto"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"latents": "32"}, "latent id(s) [32] out of range: this SAE has 32 latents (0..31)"),
        ({"latents": "1,1"}, "lists an id twice"),
        ({"latents": ",".join(map(str, range(MAX_LATENTS + 1)))}, f"at most {MAX_LATENTS} per edit"),
        ({"latents": "x"}, "latent id must be an integer"),
        ({"strength": "nan"}, "strength must hold finite numbers"),
        ({"strength": "inf"}, "strength must hold finite numbers"),
        ({"strength": "51"}, "strength must be within +-50"),
        ({"box": "0,0,1.5,1"}, "box must lie inside [0, 1]"),
        ({"box": "0.5,0,0.5,1"}, "x0 < x1"),
        ({"box": "0,0,1"}, "box must be x0,y0,x1,y1"),
        ({"window": "0,1200"}, "window must satisfy 0 <= LOW <= HIGH <= 1000"),
        ({"window": "600,200"}, "window must satisfy"),
        ({"window": "soon"}, "window must be auto or LOW,HIGH"),
        ({"class": "9"}, "class 9 is not one this backbone was trained on; choose from [0, 1, 2, 3]"),
        ({"class": "1.5"}, "class must be an integer"),
        ({"seed": "-1"}, "seed must be in 0.."),
        ({"seed": "1e3"}, "seed must be an integer"),
        ({"sae": "2"}, "sae must be in 0..1"),
        ({"unit": "sigma"}, "unit must be typical or raw"),
        ({"op": "swap"}, "op must be one of"),
        ({"path": "../x"}, "unknown parameter(s) ['path']"),
        ({"seed": ["1", "2"]}, "seed given 2 times"),
    ],
)
def test_bad_values_are_refused_in_one_line(query, message):
    with pytest.raises(BadRequest) as err:
        parse_view({"class": "1", **query}, LIMITS)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_class_or_prompt_as_the_backbone_is_conditioned():
    with pytest.raises(BadRequest, match="class is required"):
        parse_view({}, LIMITS)
    with pytest.raises(BadRequest, match="give class, not prompt"):
        parse_view({"class": "1", "prompt": "a cat"}, LIMITS)
    text = Limits(d_sae=(32,), class_labels=None)
    assert parse_view({"prompt": "a cat"}, text).prompt == "a cat"
    with pytest.raises(BadRequest, match="prompt must be 1..500 characters"):
        parse_view({"prompt": "x" * 501}, text)
    with pytest.raises(BadRequest, match="give prompt, not class"):
        parse_view({"class": "1", "prompt": "a cat"}, text)
