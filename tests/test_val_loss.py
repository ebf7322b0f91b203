"""val_loss: fixed noise and timesteps, no side effects on training."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sdcallbacks.config.metrics import ValLossConfig
from sdcallbacks.metrics.loss import ValidationLoss
from sdcallbacks.testing.shapes import draw_square


@pytest.fixture
def held_out(tmp_path):
    rng = np.random.default_rng(0)
    for i, colour in enumerate(["red", "green", "blue"]):
        draw_square(colour, "white", 40, rng).save(tmp_path / f"{i}.png")
        (tmp_path / f"{i}.txt").write_text(f"{colour} square, white background", encoding="utf-8")
    return tmp_path


def test_val_loss_is_deterministic_and_leaves_training_state_alone(tiny_modules, held_out):
    loss = ValidationLoss(ValLossConfig(data=held_out, resolution=32, batch_size=2, timesteps=[200, 800]))
    tiny_modules.unet.train()
    timesteps_before = tiny_modules.noise_scheduler.timesteps.clone()
    torch.manual_seed(7)
    random.seed(7)
    state = (torch.get_rng_state(), random.getstate())
    first = loss.evaluate(tiny_modules)
    assert torch.equal(state[0], torch.get_rng_state()) and state[1] == random.getstate()
    assert tiny_modules.unet.training and all(m.training for m in tiny_modules.unet.modules())
    assert torch.equal(timesteps_before, tiny_modules.noise_scheduler.timesteps)
    assert set(first) == {"val_loss", "val_loss/t200", "val_loss/t800"}
    assert first["val_loss"] == pytest.approx((first["val_loss/t200"] + first["val_loss/t800"]) / 2)
    assert loss.evaluate(tiny_modules) == first  # same images, same noise: same number

    with torch.no_grad():  # the curve moves with the weights
        for name, param in tiny_modules.unet.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)
    assert loss.evaluate(tiny_modules)["val_loss"] != first["val_loss"]


def test_val_loss_rejects_timesteps_beyond_the_schedule(tiny_modules, held_out):
    loss = ValidationLoss(ValLossConfig(data=held_out, resolution=32, timesteps=[1000]))
    with pytest.raises(ValueError, match="num_train_timesteps"):
        loss.evaluate(tiny_modules)


def test_imagefolder_captions_are_read_and_uncaptioned_images_are_counted_skips(
    tiny_modules, held_out, tmp_path_factory, caplog
):
    import json
    import logging
    import shutil

    config = {"resolution": 32, "batch_size": 2, "timesteps": [400]}
    with_txt = ValidationLoss(ValLossConfig(data=held_out, **config)).evaluate(tiny_modules)

    layout = tmp_path_factory.mktemp("imagefolder")  # diffusers' imagefolder: metadata.jsonl, no .txt
    with (layout / "metadata.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(3):
            shutil.copy(held_out / f"{i}.png", layout / f"{i}.png")
            caption = (held_out / f"{i}.txt").read_text(encoding="utf-8")
            fh.write(json.dumps({"file_name": f"{i}.png", "text": caption}) + "\n")
    from_metadata = ValidationLoss(ValLossConfig(data=layout, **config))
    assert from_metadata.evaluate(tiny_modules) == with_txt
    assert from_metadata.data()[1] == [(held_out / f"{i}.txt").read_text(encoding="utf-8") for i in range(3)]

    shutil.copy(held_out / "0.png", layout / "uncaptioned.png")  # neither an entry nor a .txt
    with caplog.at_level(logging.WARNING, logger="sdcallbacks"):
        partial = ValidationLoss(ValLossConfig(data=layout, **config))
        assert partial.evaluate(tiny_modules) == with_txt  # left out, not scored with an empty prompt
    assert list(partial.skipped) == [layout / "uncaptioned.png"]
    assert "1 of 4 held-out images skipped: uncaptioned.png: no caption" in caplog.text


def test_held_out_images_are_prepared_like_diffusers_dreambooth_training_images(tmp_path):
    """Bilinear short side (torchvision's size rule), centre crop, alpha dropped (not composited), [-1, 1]:
    re-derived with PIL and numpy."""
    from PIL import Image

    from sdcallbacks.metrics.loss.val_loss import load_training_image, to_pixels

    rgba = np.zeros((45, 70, 4), dtype=np.uint8)
    rgba[..., 0] = np.linspace(0, 255, 70, dtype=np.uint8)[None, :]
    rgba[..., 1] = np.linspace(255, 0, 45, dtype=np.uint8)[:, None]
    rgba[..., 2] = 200  # hidden under alpha 0 on the left half: the script keeps these colours
    rgba[..., 3] = 255
    rgba[:, :35, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")

    image = load_training_image(tmp_path / "a.png")
    assert image.mode == "RGB" and np.asarray(image)[0, 0].tolist() == [0, 255, 200]  # not white

    size = 32
    width = int(size * 70 / 45)  # torchvision: the long side is truncated
    resized = image.resize((width, size), Image.BILINEAR)
    left = round((width - size) / 2.0)  # Python rounds half to even, as torchvision does
    expected = np.asarray(resized.crop((left, 0, left + size, size)), dtype=np.float32) / 255.0 * 2 - 1
    got = to_pixels(image, size).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


def hand_computed_loss(pipe, images, captions, resolution, timesteps, seed=0, sdxl=False) -> float:
    """The loss re-derived with diffusers' own pipeline pieces: ``encode_prompt`` for the conditioning, the
    VAE's latent mean, noise from ``seed + image index``, ``add_noise``, the UNet, mean squared error."""
    from sdcallbacks.metrics.loss.val_loss import to_pixels

    unet, vae, scheduler = pipe.unet, pipe.vae, pipe.scheduler
    losses = []
    with torch.no_grad():
        for i, (image, caption) in enumerate(zip(images, captions)):
            latents = (
                vae.encode(to_pixels(image, resolution)[None]).latent_dist.mean * vae.config.scaling_factor
            )
            noise = torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(seed + i))[None]
            if sdxl:
                context, _, pooled, _ = pipe.encode_prompt(caption, do_classifier_free_guidance=False)
                h, w = image.height, image.width  # the original size, before the resize
                short = min(h, w)
                rh, rw = (
                    (resolution, int(resolution * w / h))
                    if h == short
                    else (int(resolution * h / w), resolution)
                )
                time_ids = torch.tensor(
                    [
                        [
                            h,
                            w,
                            round((rh - resolution) / 2),
                            round((rw - resolution) / 2),
                            resolution,
                            resolution,
                        ]
                    ],
                    dtype=context.dtype,
                )
                added = {"text_embeds": pooled, "time_ids": time_ids}
            else:
                context, _ = pipe.encode_prompt(caption, "cpu", 1, do_classifier_free_guidance=False)
                added = None
            for t in timesteps:
                step = torch.tensor([t])
                noisy = scheduler.add_noise(latents, noise, step)
                prediction = unet(noisy, step, context, added_cond_kwargs=added).sample
                losses.append(float(((prediction - noise) ** 2).mean()))
    return float(np.mean(losses))


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_val_loss_equals_a_hand_computed_loss(family, tiny_modules, clip_tokenizer, tmp_path):
    """One image wider than tall (so SDXL's crop corner is not 0), two timesteps."""
    import diffusers
    from PIL import Image

    from sdcallbacks.testing.modules import tiny_sdxl_modules

    rng = np.random.default_rng(4)
    image = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    image.save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a red square", encoding="utf-8")
    modules = tiny_sdxl_modules(clip_tokenizer) if family == "sdxl" else tiny_modules
    for module in modules.torch_modules():
        module.eval()
    config = ValLossConfig(data=tmp_path, resolution=32, timesteps=[300, 700], seed=5)
    got = ValidationLoss(config).evaluate(modules)["val_loss"]
    names = ["vae", "text_encoder", "tokenizer", "unet"]
    if family == "sdxl":
        names += ["text_encoder_2", "tokenizer_2"]
        pipe_cls, extra = diffusers.StableDiffusionXLPipeline, {}
    else:
        pipe_cls = diffusers.StableDiffusionPipeline
        extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    pipe = pipe_cls(**{n: getattr(modules, n) for n in names}, scheduler=modules.noise_scheduler, **extra)
    expected = hand_computed_loss(
        pipe, [image], ["a red square"], 32, [300, 700], seed=5, sdxl=family == "sdxl"
    )
    assert got == pytest.approx(expected, rel=1e-5)
