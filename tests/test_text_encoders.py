"""Text encoders dropped by the training script (``--pre_compute_text_embeddings``, the SD3/Flux scripts'
single instance prompt) are loaded from the base model for validation; with nowhere to load them from, the
error comes at ``on_train_start``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdcallbacks import ValidationCallback
from sdcallbacks.config import validate_config
from sdcallbacks.sampling.families import ModulesError
from sdcallbacks.testing.modules import tiny_flux_modules, tiny_lora_modules
from tests.helpers import MeanBrightness, pipeline_of


def run_config(tmp_path, **sampling):
    return validate_config(
        {
            "output_dir": str(tmp_path / "out"),
            "prompts": [{"name": "red", "prompt": "red square", "seeds": [1, 2]}],
            "defaults": {"width": 32, "height": 32, "steps": 2, "guidance_scale": 2.0},
            "sampling": sampling,
            "schedule": {"every_n_steps": 2},
            "metrics": {},
            "monitor": "val/brightness/mean",
        }
    )


def baseline_pixels(out):
    return {
        p.name: np.asarray(Image.open(p))
        for p in sorted((out / "samples" / "step_0000000_base").glob("*.png"))
    }


@pytest.mark.parametrize("family", ["sd", "flux"])
def test_text_encoders_given_as_none_are_loaded_from_where_the_denoiser_came_from(
    family, tmp_path, tiny_modules, clip_tokenizer, t5_tokenizer
):
    """The base model saved as a pipeline folder; the denoiser loaded from it (diffusers records the folder
    in its config) and the text encoders and tokenizers passed as None: validation draws what it draws with
    them given, and the loaded encoders are of the pipeline's classes, in the frozen weights' dtype."""
    import diffusers

    if family == "flux":
        modules = tiny_flux_modules(clip_tokenizer, t5_tokenizer, lora=False)
    else:
        modules = tiny_lora_modules(clip_tokenizer, lora=False)  # a pipeline folder holds the base model
    base = tmp_path / "base"
    pipeline_of(modules).save_pretrained(base)
    cls = diffusers.FluxTransformer2DModel if family == "flux" else diffusers.UNet2DConditionModel
    name = "transformer" if family == "flux" else "unet"
    reloaded = cls.from_pretrained(base, subfolder=name)
    with_encoders = ValidationCallback(run_config(tmp_path / "given"), metrics=[MeanBrightness()])
    with_encoders.on_train_start(**{**vars(modules), name: reloaded})

    dropped = {**vars(modules), name: reloaded, "text_encoder": None, "tokenizer": None}
    if family == "flux":
        dropped |= {"text_encoder_2": None, "tokenizer_2": None}
    cb = ValidationCallback(run_config(tmp_path / "loaded"), metrics=[MeanBrightness()])
    cb.on_train_start(**dropped)
    live = cb.validation.sampler.modules
    assert live.loaded_encoders == (
        ("text_encoder", "text_encoder_2") if family == "flux" else ("text_encoder",)
    )
    if family == "flux":
        assert type(live.text_encoder_2).__name__ == "T5EncoderModel"
        assert type(live.tokenizer_2).__name__ in ("T5Tokenizer", "T5TokenizerFast")
    assert {p.dtype for p in live.text_encoder.parameters()} == {torch.float32}
    given, loaded = baseline_pixels(tmp_path / "given" / "out"), baseline_pixels(tmp_path / "loaded" / "out")
    assert given.keys() == loaded.keys() and len(given) == 3  # two images and the grid
    for key in given:
        np.testing.assert_array_equal(given[key], loaded[key])


def test_a_configured_source_wins_and_nowhere_to_load_from_is_an_error_before_training(
    tmp_path, tiny_modules
):
    dropped = {**vars(tiny_modules), "text_encoder": None, "tokenizer": None}
    cb = ValidationCallback(run_config(tmp_path), metrics=[MeanBrightness()])
    with pytest.raises(
        ModulesError,
        match=r"text_encoder/tokenizer not given \(None\), as diffusers' scripts leave them with --pre_comp",
    ):
        cb.on_train_start(**dropped)  # built in code: the UNet has no origin to load from
    assert not (tmp_path / "out").exists()

    base = tmp_path / "base"
    pipeline_of(tiny_lora_modules(tiny_modules.tokenizer, lora=False)).save_pretrained(base)
    cb = ValidationCallback(run_config(tmp_path, text_encoders_from=str(base)), metrics=[MeanBrightness()])
    cb.on_train_start(**dropped)
    assert cb.validation.sampler.modules.loaded_encoders == ("text_encoder",)
    assert len(baseline_pixels(tmp_path / "out")) == 3

    cb = ValidationCallback(
        run_config(tmp_path / "bad", text_encoders_from=str(tmp_path / "nowhere")), metrics=[MeanBrightness()]
    )
    with pytest.raises(ModulesError, match=r"cannot read model_index.json of .*nowhere"):
        cb.on_train_start(**dropped)
