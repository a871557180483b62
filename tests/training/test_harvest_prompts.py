"""Prompt-conditioned harvesting through a stock PixArtAlphaPipeline, built offline.

The tokenizer is a word-level `tokenizers` model made in memory and the text encoder a tiny random
T5, so the pipeline's own prompt path (tokenise, encode, CFG with the empty negative prompt) runs.
"""

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.training.harvest import HarvestConfig, harvest_chunks

PROMPTS = ("a red square", "a blue circle", "a green cross")


@pytest.fixture(scope="module")
def pixart():
    torch.manual_seed(0)
    words = sorted({w for p in PROMPTS for w in p.split()})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    encoder = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2))
    transformer = PixArtTransformer2DModel(
        sample_size=8,
        num_layers=2,
        patch_size=2,
        attention_head_dim=2,
        num_attention_heads=2,
        in_channels=4,
        cross_attention_dim=8,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=8,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        use_additional_conditions=False,
        caption_channels=None,
    )
    pipe = PixArtAlphaPipeline(
        tokenizer=tokenizer,
        text_encoder=encoder.eval(),
        vae=AutoencoderKL(),
        transformer=transformer.eval(),
        scheduler=DDIMScheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_prompts_are_cycled_and_their_index_is_the_label(pixart):
    cfg = HarvestConfig(
        hook_names=("blocks.1.hook_resid_post",),
        prompts=PROMPTS,
        num_images=4,
        images_per_batch=4,
        num_inference_steps=3,
        tokens_per_image=2,
        branch="both",
        pipeline_kwargs={"use_resolution_binning": False, "max_sequence_length": 8, "clean_caption": False},
    )
    (chunk,) = harvest_chunks(pixart, HookedDiT(pixart.transformer), cfg, progress=False)
    assert chunk.num_rows == 4 * 3 * 2 * 2  # images x steps x branches x tokens
    # Images cycle through the prompts: image i asked for prompt i % 3, whatever its CFG branch.
    expected = torch.tensor([i % len(PROMPTS) for i in range(4)])
    assert torch.equal(chunk.label, expected[chunk.sample])
    assert set(chunk.branch.tolist()) == {0, 1}  # text pipelines: uncond half first, both kept
    pixart.scheduler.set_timesteps(3)
    assert sorted(set(chunk.timestep.tolist())) == sorted(float(t) for t in pixart.scheduler.timesteps)


def test_prompts_and_class_labels_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        HarvestConfig(prompts=("a",), class_labels=(1,))
