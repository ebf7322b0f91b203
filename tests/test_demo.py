"""End to end: the demo's LoRA learns its concept and the callback sees it (builds the tiny world once)."""

from __future__ import annotations

import math

import pytest

from sdcallbacks.outputs import read_metrics


@pytest.mark.slow
def test_demo_metric_rises_and_outputs_exist(tmp_path, tiny_world, capfd):
    from sdcallbacks.demo import run_demo

    result = run_demo(output_dir=tmp_path / "demo", max_steps=600, validate_every=100, progress_bar=True)
    bar = capfd.readouterr().err
    # the progress bar: steps, loss and the last validation's monitored value at its step
    assert "training" in bar and "600/600" in bar and "loss=" in bar and "tag_accuracy=" in bar
    assert "@600" in bar  # the validation at the last step
    assert math.isfinite(result.baseline_score) and math.isfinite(result.best_score)
    assert result.gain >= 0.3, (result.baseline_score, result.best_score)
    assert result.best_step > 0

    records = read_metrics(result.metrics_path)
    steps = [r["step"] for r in records if r["type"] == "aggregate"]
    assert steps == [0, 100, 200, 300, 400, 500, 600]
    assert (result.samples_dir / "step_0000000_base" / "grid.png").is_file()

    # The kept LoRA loads into the base pipeline in diffusers format.
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_world.pipeline_dir)
    pipe.load_lora_weights(result.best_model_path)

    # W&B wrote an offline run.
    assert result.wandb_dir is not None and list(result.wandb_dir.glob("run-*.wandb"))

    # Every sample PNG carries its generation parameters, seed included (a grid: its first image's).
    from PIL import Image

    from sdcallbacks.prompts.parameters import GenerationParameters

    pngs = sorted(result.samples_dir.rglob("*.png"))
    assert len(pngs) == 7 * 9  # 7 validations of 8 images and a grid
    for path in pngs:
        with Image.open(path) as image:
            seed = GenerationParameters.from_text(image.info["parameters"]).seed
        assert seed is not None and (path.name == "grid.png" or path.stem.endswith(f"_s{seed}")), path

    # sdcallbacks report DIR writes DIR/report.html, which renders in headless Chromium.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from sdcallbacks.cli import main
    from tests.helpers import headless_chromium

    assert main(["report", str(tmp_path / "demo")]) == 0
    driver = headless_chromium()
    try:
        driver.get((tmp_path / "demo" / "report.html").resolve().as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) >= 5
        shown = "arguments[0].scrollIntoView(); return arguments[0].complete && arguments[0].naturalWidth"
        for image in images:  # the rating page's images load when scrolled to
            WebDriverWait(driver, 10).until(lambda d, image=image: d.execute_script(shown, image))
        assert driver.find_element(By.ID, "grid-label").text == "step 600"
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        driver.quit()
