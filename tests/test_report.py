"""``sdcallbacks report``: a run's folder as one HTML page, checked in headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven by Selenium); bad input never leaves a half-written page."""

from __future__ import annotations

import base64
import re
import shutil

import pytest

from sdcallbacks import ValidationCallback
from sdcallbacks.calibration import read_ratings, read_scores
from sdcallbacks.cli import main
from sdcallbacks.config import validate_config
from sdcallbacks.metrics import BackbonePool, build_metrics
from sdcallbacks.report import ReportError, read_run, write_report
from sdcallbacks.testing.modules import perturb_lora, tiny_lora_modules
from tests.helpers import MeanBrightness, Worsening, headless_chromium


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, clip_tokenizer, tagger_dir):
    """A callback run that keeps a best step and stops early: ``worsening`` (1, 1/2, 1/3 by validation)
    is best at step 2 and, with patience 1, stops the run at step 4; tag accuracy over prompts of one and
    two tags; brightness, whose images differ, for CI bands."""
    tmp = tmp_path_factory.mktemp("report")
    config = validate_config(
        {
            "output_dir": str(tmp / "run"),
            "prompts": [
                {"name": "red", "prompt": "red square, white background", "seeds": [1, 2]},
                {"name": "blue", "prompt": "blue square", "seeds": [3, 4]},
            ],
            "defaults": {"width": 32, "height": 32, "steps": 2, "guidance_scale": 2.0},
            "sampling": {"baseline": True},
            "schedule": {"every_n_steps": 2},
            "metrics": {"tag_accuracy": {"model": str(tagger_dir)}},
            "monitor": "val/worsening/mean",
            "early_stopping": {"patience": 1},
        }
    )
    tagger = build_metrics(config.metrics.enabled(), device="cpu", pool=BackbonePool(None))
    cb = ValidationCallback(config, metrics=[Worsening(), MeanBrightness(), *tagger])
    modules = tiny_lora_modules(clip_tokenizer)
    cb.on_train_start(**vars(modules))
    for step in range(1, 9):
        perturb_lora(modules, step)
        if cb.on_step_end(step).should_stop:
            break
    cb.on_train_end(step)
    assert step == 4  # the stop the report must show
    return tmp / "run"


def test_the_report_holds_every_part_of_the_run(run_folder, tmp_path):
    files = write_report(run_folder, tmp_path / "report.html")
    page = files.html.read_text(encoding="utf-8")
    run = read_run(run_folder)
    assert [v.step for v in run.series()] == [2, 4]
    assert run.selection["best/step"] == 2 and run.stop == (4, "patience_exhausted")
    assert "best step: <b>2</b>" in page and "stopped early at step 4: patience_exhausted" in page
    # A curve per metric, each a PNG beside the page and embedded in it.
    names = sorted(p.name for p in files.plots)
    assert any("val_worsening_mean" in n for n in names) and any("val_brightness_mean" in n for n in names)
    assert "tag_accuracy_by_tag_count.png" in names
    for plot in files.plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert base64.b64encode(plot.read_bytes()).decode() in page
    # The grid of each validation (base, 2, 4) for the slider; nothing fetched from elsewhere.
    assert page.count("data:image/png;base64,") >= len(files.plots) + 3
    assert not re.search(r"(src|href)=['\"]https?:", page)
    # Each image record carries which of its prompt's tags the tagger found, in prompt order; their share
    # is the image's tag accuracy.
    tagged = [r for r in run.images if r["scores"].get("tag_accuracy") is not None]
    assert tagged and len(tagged) == len(run.images)
    for record in tagged:
        detail = record["details"]["tag_accuracy/tags"]
        expected = ["red_square", "white_background"] if record["prompt_name"] == "red" else ["blue_square"]
        assert detail["tags"] == expected
        assert sum(detail["found"]) / len(detail["found"]) == pytest.approx(record["scores"]["tag_accuracy"])
    # Tag accuracy by the number of prompted tags (one and two) and by position (first, second), for the
    # base model and the best step.
    assert re.search(r"<th>tags in the prompt</th><th>1</th><th>2</th>", page)
    assert re.search(r"<th>position</th><th>1</th><th>2</th>", page)
    assert "tag_accuracy_by_tag_position.png" in names
    assert page.count("<td>base</td>") == 2 and page.count("<td>step 2</td>") == 2
    second = [
        r["details"]["tag_accuracy/tags"]["found"][1]
        for r in tagged
        if r["variant"] == "base" and r["prompt_name"] == "red"
    ]
    share = sum(second) / len(second)
    assert f"<td>{share:.4g} ({len(second)})</td>" in page.split("<th>position</th>")[1].split("</table>")[0]
    # Per prompt: each prompt's column for each validation.
    assert "<th>red</th>" in page and "<th>blue</th>" in page


def test_the_report_renders_in_headless_chromium_and_its_slider_moves(run_folder, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    out = tmp_path / "report.html"
    assert main(["report", str(run_folder), "--out", str(out)]) == 0
    driver = headless_chromium()
    try:
        driver.get(out.resolve().as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) >= 5
        loaded = "arguments[0].scrollIntoView(); return arguments[0].complete && arguments[0].naturalWidth"
        for image in images:  # every image decoded, none broken (the rating page's load when scrolled to)
            WebDriverWait(driver, 10).until(lambda d, image=image: d.execute_script(loaded, image))
        label = driver.find_element(By.ID, "grid-label")
        grid = driver.find_element(By.ID, "grid-image")
        assert label.text == "step 4"  # the last validation first
        last = grid.get_attribute("src")
        driver.find_element(By.ID, "grid-step").send_keys(Keys.HOME)  # the user drags it to the start
        assert label.text == "step 0 (base)"
        assert grid.get_attribute("src") != last
        assert driver.execute_script("return arguments[0].naturalWidth", grid) > 0
        # The rating page: the user clicks ratings, exports them, and calibrate reads the file as it is.
        radios = driver.find_elements(By.CSS_SELECTOR, "input.rating")
        assert len(radios) == 5 * len(read_run(run_folder).images)
        chosen = {}
        for k, value in enumerate((1, 3, 4, 5)):
            radio = radios[k * 5 + value - 1]
            driver.execute_script("arguments[0].scrollIntoView()", radio)
            radio.click()
            chosen[radio.get_attribute("name")] = value
        driver.find_element(By.ID, "rater").clear()
        driver.find_element(By.ID, "rater").send_keys("ann")
        driver.find_element(By.ID, "export-ratings").click()
        exported = driver.find_element(By.ID, "ratings-csv").get_attribute("value")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()
    ratings_file = tmp_path / "ratings.csv"
    ratings_file.write_text(exported)
    table = read_scores(run_folder / "metrics.jsonl")
    ratings = read_ratings(ratings_file, set(table.ids))
    assert {(image, rating) for image, _, rating in ratings.likert} == set(chosen.items())
    assert {rater for _, rater, _ in ratings.likert} == {"ann"}
    assert all(image.startswith("samples/step_") for image in chosen)


def test_a_torn_last_record_is_skipped_and_counted_a_broken_one_is_an_error(run_folder, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(run_folder, folder)
    metrics = folder / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines) + '{"type": "aggregate", "step": 6, "val')  # the run died mid-write
    assert main(["report", str(folder)]) == 0
    torn = len(lines) + 1
    assert f"skipped metrics.jsonl line {torn}" in capsys.readouterr().out
    assert f"metrics.jsonl line {torn}" in (folder / "report.html").read_text()

    (folder / "report.html").unlink()
    lines.insert(3, "not json\n")
    metrics.write_text("".join(lines))
    assert main(["report", str(folder)]) == 2
    assert f"{metrics}:4: not a JSON record" in capsys.readouterr().err
    assert not (folder / "report.html").exists()  # no half-written page
    assert [p.name for p in folder.iterdir() if p.name.startswith(".report")] == []

    with pytest.raises(ReportError, match=r"metrics\.jsonl: not found"):
        write_report(tmp_path / "nothing")


def test_wandb_report_spec_lays_out_the_runs_keys_offline(run_folder, tmp_path, capsys):
    """``sdcallbacks wandb-report RUN_PATH --outputs DIR --spec FILE``: the view spec W&B's reports API
    saves, built offline from the run's own keys, and read back by that API into the same panels."""
    import json

    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces.reports.v2 import internal

    out = tmp_path / "spec.json"
    assert main(["wandb-report", "me/lora/abc123", "--outputs", str(run_folder), "--spec", str(out)]) == 0
    spec = json.loads(out.read_text(encoding="utf-8"))
    assert spec["displayName"] == "Validation: abc123"
    assert spec["project"] == {"name": "lora", "entityName": "me"}

    run_filters = [
        rs["filters"]["filters"]
        for b in spec["spec"]["blocks"]
        if b["type"] == "panel-grid"
        for rs in b["metadata"]["runSets"]
    ]
    assert run_filters and all(
        f == [{"key": {"section": "run", "name": "name"}, "op": "=", "value": "abc123", "disabled": False}]
        for f in run_filters
    )  # W&B's run id is the run's "name" in its filters

    report = wr.Report._from_model(internal.ReportViewspec.model_validate(spec))
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    assert all(not rs.project for g in grids for rs in g.runsets)  # the report's own project
    panels = [p for g in grids for p in g.panels]
    lines = [p for p in panels if isinstance(p, wr.LinePlot)]
    assert {p.x.name for p in lines} == {"train/global_step"}
    monitored = ["val/worsening/mean", "val/worsening/ci_low", "val/worsening/ci_high"]
    assert [m.name for m in lines[0].y] == monitored
    assert lines[0].line_marks == {
        "abc123:val/worsening/ci_low": "dashed",
        "abc123:val/worsening/ci_high": "dashed",
    }
    logged = {k for v in read_run(run_folder).series() for k in v.values}
    deltas = [m.name for p in lines[1:] for m in p.y]
    assert (
        {"val/worsening/delta", "val/brightness/delta", "val/tag_accuracy/f1/delta"} <= set(deltas) <= logged
    )
    media = [p for p in panels if isinstance(p, wr.MediaBrowser)]
    assert [p.media_keys for p in media] == [["val/images/red"], ["val/images/blue"]]
    tables = [p for p in panels if isinstance(p, wr.WeavePanelSummaryTable)]
    assert [t.table_name for t in tables] == ["val/samples"]


def test_wandb_report_without_a_login_or_with_a_bad_run_path_is_a_clear_error(
    run_folder, tmp_path, monkeypatch, capsys
):
    from sdcallbacks.report.wandb_report import RunPath

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["wandb-report", "me/lora/abc123", "--outputs", str(run_folder)]) == 2
    assert (
        "not logged in to W&B (wandb login, or WANDB_API_KEY); offline, write --spec FILE"
        in capsys.readouterr().err
    )
    assert (
        main(["wandb-report", "me/abc123", "--outputs", str(run_folder), "--spec", str(tmp_path / "s")]) == 2
    )
    assert "run path 'me/abc123': expected ENTITY/PROJECT/RUN_ID" in capsys.readouterr().err
    assert RunPath.parse("me/lora/runs/abc123/") == RunPath("me", "lora", "abc123")  # the run URL's path
    assert not (tmp_path / "s").exists()
