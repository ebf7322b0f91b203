"""Two CPU processes (gloo, torchrun) give the same images, scores and decisions as one, and never hang.

torchrun with a free port rather than ``debug_launcher`` (fixed port 29500, fork after torch has started
its thread pools) or ``accelerate launch --cpu`` (which runs one process).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdcallbacks.outputs import read_metrics
from sdcallbacks.testing.launch import torchrun_command
from tests.helpers import logged_aggregates

WORKER = Path(__file__).with_name("multiprocess_worker.py")
TIMEOUT_S = 300  # a hang fails the test instead of the suite


def launch(processes: int, out: Path, tokenizer_dir: Path, clip: str, **env_vars: str) -> list[dict]:
    out.mkdir()
    command = torchrun_command(processes, WORKER, str(out), str(tokenizer_dir), clip)
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_vars}
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{processes} processes did not finish in {TIMEOUT_S} s (hang?)\n{err.stderr}")
    assert done.returncode == 0, done.stderr[-5000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


def records(out: Path, kind: str) -> list[dict]:
    return [r for r in read_metrics(out / "metrics.jsonl") if r["type"] == kind]


@pytest.mark.parametrize("family", ["sd", "flux"])
def test_two_processes_equal_one_image_for_image(family, tmp_path, backbones):
    """SD 1.x, and Flux for the transformer families (packed latents, T5, flow matching, transformer LoRA
    checkpoints restored at the end)."""
    one = launch(1, tmp_path / "one", tmp_path / "tok1", backbones.clip, FAMILY=family)
    two = launch(2, tmp_path / "two", tmp_path / "tok2", backbones.clip, FAMILY=family)

    # the same decisions, on every rank, as with one process
    assert two[0]["controls"] == two[1]["controls"] == one[0]["controls"]
    assert any(control[2] for control in one[0]["controls"][1:])  # should_stop reached every rank
    assert two[0]["best_step"] == two[1]["best_step"] == one[0]["best_step"] is not None
    # restore_best_at_end loaded the same weights into both ranks' models
    assert two[0]["lora_sum"] == pytest.approx(two[1]["lora_sum"]) == pytest.approx(one[0]["lora_sum"])

    # each validation has 5 image records: no padding duplicates
    images_one, images_two = records(tmp_path / "one", "image"), records(tmp_path / "two", "image")
    per_step = {}
    for r in images_two:
        per_step.setdefault((r["step"], r["variant"]), []).append((r["prompt_name"], r["seed"]))
    assert all(sorted(pairs) == sorted(set(pairs)) and len(pairs) == 5 for pairs in per_step.values())
    key = lambda r: (r["step"], r["variant"], r["prompt_name"], r["seed"])  # noqa: E731
    assert [key(r) for r in images_one] == [key(r) for r in images_two]
    for a, b in zip(images_one, images_two):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-6)
        pixels_a = np.asarray(Image.open(a["image_path"]))
        pixels_b = np.asarray(Image.open(b["image_path"]))
        assert np.array_equal(pixels_a, pixels_b), a["image_path"]

    for a, b in zip(logged_aggregates(tmp_path / "one"), logged_aggregates(tmp_path / "two"), strict=True):
        assert a[:2] == b[:2] and a[2] == pytest.approx(b[2], abs=1e-6)


def test_a_failure_on_one_process_fails_the_validation_on_all_without_a_hang(tmp_path, backbones):
    ranks = launch(2, tmp_path / "out", tmp_path / "tok", backbones.clip, FAIL_ON_LAST_RANK_AT="4")
    assert ranks[0]["failed_validations"] == ranks[1]["failed_validations"] == 1
    assert ranks[0]["controls"] == ranks[1]["controls"]
    steps = {r["step"] for r in records(tmp_path / "out", "aggregate")}
    assert 4 not in steps and {0, 2, 6} <= steps  # training went on; earlier records kept


def test_two_processes_with_background_scoring_agree_and_stop_one_validation_late(tmp_path, backbones):
    ranks = launch(2, tmp_path / "out", tmp_path / "tok", backbones.clip, SCORING_MODE="async")
    assert ranks[0]["controls"] == ranks[1]["controls"]
    assert ranks[0]["failed_validations"] == ranks[1]["failed_validations"] == 0
    logged = {step: values["val/brightness/mean"] for step, _, values in logged_aggregates(tmp_path / "out")}
    # Where patience 1 stops on these values (the first validation that does not beat the best so far) ...
    best, due = logged[2], None
    for step in sorted(s for s in logged if s > 2):
        if logged[step] <= best:
            due = step
            break
        best = logged[step]
    assert due is not None
    # ... and where the ranks stopped: with several processes, the decision travels with the next validation.
    # A stop due at the last step (10) is decided in on_train_end, after the loop: no control carries it.
    stopped = [control[0] for control in ranks[0]["controls"][1:] if control[2]]
    assert stopped[:1] == ([min(due + 2, 10)] if due < 10 else [])
    assert (
        ranks[0]["best_step"]
        == ranks[1]["best_step"]
        == max((s for s in logged if 0 < s <= due), key=logged.get)
    )
    assert ranks[0]["lora_sum"] == pytest.approx(ranks[1]["lora_sum"])  # restored alike on both ranks
