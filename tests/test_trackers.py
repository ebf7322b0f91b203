"""Trackers: a W&B offline run read back from its .wandb file, TensorBoard images, scalars to any other
tracker, and failing trackers that never stop training."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

import pytest

from sdcallbacks import ValidationCallback
from sdcallbacks.testing.accelerator import AcceleratorStub
from sdcallbacks.testing.wandb_reader import find_run_file, read_offline_run
from tests.helpers import start


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        folder = tmp_path / name.lower()
        folder.mkdir()
        monkeypatch.setenv(name, str(folder))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path / "wandb_dir"


def config(tmp_path, tagger_dir, **overrides):
    data = {
        "output_dir": str(tmp_path / "out"),
        "prompts": [
            {"name": "red", "prompt": "red square", "seeds": [1, 2]},
            {"name": "blue", "prompt": "blue square", "seeds": [3]},
        ],
        "defaults": {"width": 32, "height": 32, "steps": 2, "guidance_scale": 2.0},
        "schedule": {"every_n_steps": 2},
        "metrics": {"tag_accuracy": {"model": str(tagger_dir)}},
        "monitor": "val/tag_accuracy/mean",
        "checkpoint": {"save_top_k": 1},
        "early_stopping": {"patience": 10},
    }
    data.update(overrides)
    return data


def test_wandb_offline_run_has_step_metric_rows_tables_and_summary(
    tmp_path, tagger_dir, tiny_modules, wandb_env, monkeypatch
):
    import wandb

    warnings: list[str] = []
    monkeypatch.setattr(wandb, "termwarn", lambda msg, *a, **k: warnings.append(str(msg)))
    trackers = {"wandb": {"create_run": True, "mode": "offline", "log_best_checkpoint": True}}
    cb = ValidationCallback.from_config(config(tmp_path, tagger_dir, trackers=trackers))
    start(cb, tiny_modules)
    cb.on_step_end(2)
    cb.on_step_end(4)
    cb.validate(3)  # logged late, at a lower step than the last row (as after a resume)
    cb.on_train_end(4)
    wandb.teardown()  # stops W&B's service: every record it received is in the run file when it returns

    run = read_offline_run(find_run_file(wandb_env))
    # define_metric: the step metric, val/* on it, the monitored key with summary following mode
    metrics = {m.name or m.glob_name: m for m in run.metrics}
    assert "train/global_step" in metrics
    assert metrics["val/*"].step_metric == "train/global_step"
    assert metrics["val/tag_accuracy/mean"].summary.max
    # every validation row landed, with its own step, even the late one
    rows = [r for r in run.history if "val/tag_accuracy/mean" in r]
    assert [r["train/global_step"] for r in rows] == [0, 2, 4, 3]
    assert not any("monotonically increasing" in w for w in warnings)
    first = rows[0]
    assert first["val/images/red/_type"] == "image-file" and first["val/images/blue/caption"] == "blue"
    assert first["val/samples/_type"] == "table-file" and first["val/samples/nrows"] == 3
    table_files = sorted((find_run_file(wandb_env).parent / "files").rglob("samples_*.table.json"))
    assert len(table_files) == 4  # a new table per validation
    table = json.loads(table_files[0].read_text())
    assert table["columns"][:6] == ["step", "variant", "prompt_name", "prompt", "seed", "image"]
    assert "tag_accuracy" in table["columns"] and "tag_accuracy/precision" in table["columns"]
    # run summary: best score, its step and the stopping reason; min/max summary of the monitored key kept
    assert run.summary["best/val/tag_accuracy/mean"] == cb.best_model_score
    assert run.summary["best/step"] == cb.best_step
    assert run.summary["early_stop/reason"] == "not_stopped"
    assert run.summary["val/tag_accuracy/mean"] == {"max": cb.best_model_score}
    assert run.config["monitor"] == "val/tag_accuracy/mean"
    assert any("best" in a.aliases for a in run.artifacts if a.type == "model")
    # each row at W&B's step = its training step; the late one at the next W&B step, not over step 4's row
    assert [r["_step"] for r in rows] == [0, 2, 4, 5]


@pytest.mark.parametrize("case", ["wandb_without_api_key", "tensorboard_not_installed"])
def test_a_tracker_that_cannot_start_warns_once_and_training_goes_on(
    case, tmp_path, tagger_dir, tiny_modules, wandb_env, caplog, monkeypatch
):
    if case == "wandb_without_api_key":
        trackers = {"wandb": {"create_run": True, "mode": "online"}}
        message = "could not start a W&B run (UsageError"
    else:
        import sdcallbacks.trackers.logger as logger_module

        def missing(log_dir):
            raise ImportError("No module named 'tensorboard'")

        monkeypatch.setattr(logger_module, "TensorBoardWriter", missing)
        trackers = {"tensorboard_dir": str(tmp_path / "tb")}
        message = "TensorBoard is not installed"
    cb = ValidationCallback.from_config(config(tmp_path, tagger_dir, trackers=trackers))
    with caplog.at_level(logging.WARNING, logger="sdcallbacks"):
        start(cb, tiny_modules)
        assert cb.on_step_end(2).should_validate
        cb.on_step_end(4)
    assert caplog.text.count(message) == 1
    assert (tmp_path / "out" / "samples" / "step_0000004" / "grid.png").is_file()


class RecordingTracker:
    def __init__(self, name="aim", fail=False):
        self.name = name
        self.fail = fail
        self.calls: list[tuple[dict, int]] = []

    def log(self, values, step=None):
        if self.fail:
            raise ConnectionError("server gone")
        self.calls.append((values, step))


class RecordingWriter:
    def __init__(self):
        self.images: list[tuple[str, tuple, int]] = []

    def add_image(self, tag, array, step, dataformats):
        assert dataformats == "HWC"
        self.images.append((tag, array.shape, step))

    def flush(self):
        pass


def test_scalars_to_any_tracker_images_to_tensorboard_and_a_failing_tracker_is_skipped(
    tmp_path, tagger_dir, tiny_modules, caplog
):
    other, broken = RecordingTracker("aim"), RecordingTracker("comet_ml", fail=True)  # scalars only
    tensorboard = RecordingTracker("tensorboard")
    tensorboard.writer = RecordingWriter()
    accelerator = AcceleratorStub(trackers=[other, broken, tensorboard])
    cb = ValidationCallback.from_config(config(tmp_path, tagger_dir), accelerator=accelerator)
    with caplog.at_level(logging.WARNING, logger="sdcallbacks"):
        start(cb, tiny_modules)
        cb.on_step_end(2)
    assert [step for _, step in other.calls] == [0, 2]
    values = other.calls[1][0]
    assert all(isinstance(v, float) for v in values.values()) and "val/tag_accuracy/mean" in values
    assert [(tag, step) for tag, _, step in tensorboard.writer.images] == [
        ("val/images/red", 0),
        ("val/images/blue", 0),
        ("val/images/red", 2),
        ("val/images/blue", 2),
    ]
    assert caplog.text.count("tracker 'comet_ml' failed") == 1  # one warning, then skipped


class RefusingWriter(RecordingWriter):
    def add_image(self, tag, array, step, dataformats):
        raise ValueError("image too large for this backend")


def test_a_tracker_that_raises_on_images_warns_once_and_the_others_and_the_files_go_on(
    tmp_path, tagger_dir, tiny_modules, caplog
):
    other, tensorboard = RecordingTracker("aim"), RecordingTracker("tensorboard")
    tensorboard.writer = RefusingWriter()
    cb = ValidationCallback.from_config(
        config(tmp_path, tagger_dir), accelerator=AcceleratorStub(trackers=[tensorboard, other])
    )
    with caplog.at_level(logging.WARNING, logger="sdcallbacks"):
        start(cb, tiny_modules)
        for step in (1, 2, 3, 4):
            cb.on_step_end(step)
    assert caplog.text.count("tracker 'tensorboard' failed (validation: ValueError: image too large") == 1
    assert [step for _, step in other.calls] == [0, 2, 4]
    from sdcallbacks.outputs import read_metrics

    steps = [r["step"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if r["type"] == "aggregate"]
    assert steps == [0, 2, 4]


def test_no_tracker_at_all_is_reported_once_with_the_installs_that_bring_them(
    tmp_path, tagger_dir, tiny_modules, caplog, monkeypatch
):
    monkeypatch.setattr("sys.argv", ["train.py"])
    cb = ValidationCallback.from_config(config(tmp_path, tagger_dir), accelerator=AcceleratorStub())
    with caplog.at_level(logging.WARNING, logger="sdcallbacks"):
        start(cb, tiny_modules)
        cb.on_step_end(2)
    assert caplog.text.count("the accelerator has no trackers") == 1
    assert "not installed here: aim (pip install aim), clearml (pip install clearml)" in caplog.text
    assert "tensorboard (pip" not in caplog.text  # installed with [dev]


@pytest.mark.parametrize(
    "argv, log_with",
    [
        (["train_dreambooth_lora.py", "--report_to", "comet_ml"], "comet_ml"),  # diffusers' scripts
        (["train_network.py", "--log_with=tensorboard,aim"], ["tensorboard", "aim"]),  # sd-scripts
    ],
)
def test_a_tracker_accelerate_dropped_for_its_missing_package_is_named_with_its_pip_install(
    argv, log_with, tmp_path, tagger_dir, tiny_modules, caplog, monkeypatch
):
    """accelerate's real Accelerator drops comet_ml / aim (not installed with [dev]) with a debug line; the
    callback names the tracker and its ``pip install``, once, and the run goes on with what is left."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    monkeypatch.setattr("sys.argv", argv)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    with pytest.warns(UserWarning) if log_with == "comet_ml" else contextlib.nullcontext():
        accelerator = Accelerator(cpu=True, log_with=log_with, project_dir=str(tmp_path / "logs"))
    accelerator.init_trackers("lora")
    cb = ValidationCallback.from_config(config(tmp_path, tagger_dir), accelerator=accelerator)
    with caplog.at_level(logging.WARNING, logger="sdcallbacks"):
        start(cb, tiny_modules)
        for step in (1, 2, 3, 4):
            cb.on_step_end(step)
    accelerator.end_training()
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    missing = "comet_ml (pip install comet-ml)" if log_with == "comet_ml" else "aim (pip install aim)"
    assert caplog.text.count(f"install {missing}") == 1, caplog.text
    assert "the accelerator has no trackers" not in caplog.text
    assert (tmp_path / "out" / "samples" / "step_0000004" / "grid.png").is_file()
    if log_with != "comet_ml":  # tensorboard, installed, still gets every validation
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(tmp_path / "logs" / "lora"))
        events.Reload()
        assert [e.step for e in events.Scalars("val/tag_accuracy/mean")] == [0, 2, 4]


def test_a_resumed_script_logs_into_the_same_wandb_run_at_its_own_steps(
    tmp_path, tagger_dir, tiny_modules, wandb_env
):
    """diffusers' scripts call ``init_trackers`` again on ``--resume_from_checkpoint``: with the README's
    stable id and ``resume="allow"`` both halves are one W&B run (offline, two files with one run id, which
    ``wandb sync`` joins), the callback's rows after the resume carry their own ``train/global_step``, and the
    script's ``loss`` rows keep their explicit steps."""
    import hashlib
    import os
    import re
    from pathlib import Path
    from types import SimpleNamespace

    import wandb
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from sdcallbacks.testing.modules import perturb_lora
    from tests.test_diffusers_instructions import readme_block

    wandb.teardown()  # a W&B set up by an earlier test keeps its WANDB_DIR: this test's applies now
    args = SimpleNamespace(output_dir=str(tmp_path / "script_out"))
    data = config(tmp_path, tagger_dir)
    del data["output_dir"]  # under the accelerator's project_dir, as the README says

    def run(first_step: int, last_step: int) -> None:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        accelerator = Accelerator(cpu=True, log_with="wandb", project_dir=args.output_dir)
        script = {"args": args, "accelerator": accelerator, "tracker_name": "dreambooth-lora", "os": os}
        script["tracker_config"] = {"lr": 1e-4}
        exec(readme_block("import hashlib"), script)  # the README's init_trackers lines
        cb = ValidationCallback.from_config(data, accelerator=accelerator)
        if first_step:
            accelerator.load_state(str(Path(args.output_dir) / f"checkpoint-{first_step}"))
        cb.on_train_start(**vars(tiny_modules), global_step=first_step)
        for step in range(first_step + 1, last_step + 1):
            perturb_lora(tiny_modules, step)
            cb.on_step_end(step)
            if step % 4 == 0:
                accelerator.save_state(str(Path(args.output_dir) / f"checkpoint-{step}"))
            accelerator.log({"loss": float(step)}, step=step)
        cb.on_train_end(last_step)
        accelerator.end_training()

    run(0, 4)
    run(4, 8)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    wandb.teardown()  # every record written before the files are read
    files = sorted(wandb_env.rglob("offline-run-*/run-*.wandb"))
    assert len(files) == 2
    expected_id = hashlib.sha1(os.path.abspath(args.output_dir).encode()).hexdigest()[:16]
    assert {re.search(r"run-(\w+)\.wandb", f.name).group(1) for f in files} == {expected_id}
    halves = [read_offline_run(f) for f in files]
    steps = [[r["train/global_step"] for r in h.history if "val/tag_accuracy/mean" in r] for h in halves]
    assert steps == [[0, 2, 4], [6, 8]]  # the baseline once, each validation in its half at its own step
    losses = [[(r.get("_step"), r["loss"]) for r in h.history if "loss" in r] for h in halves]
    assert [loss for half in losses for _, loss in half] == [float(s) for s in range(1, 9)]
    # A validation row shares W&B's row with the script's loss of the same step: against train/global_step
    # the loss is not shifted, and the script's own steps are W&B's steps.
    merged = {
        r["train/global_step"]: (r["_step"], r["loss"])
        for h in halves
        for r in h.history
        if "loss" in r and "train/global_step" in r
    }
    assert merged == {2: (2, 2.0), 4: (4, 4.0), 6: (6, 6.0), 8: (8, 8.0)}
    assert [step for half in losses for step, _ in half] == list(range(1, 9))


@pytest.mark.parametrize("scoring", ["sync", "async"])
def test_a_loop_that_logs_before_on_step_end_keeps_its_loss_at_its_own_step(
    tmp_path, tagger_dir, tiny_modules, wandb_env, scoring
):
    """The other order (the loop's ``log(step=N)`` first, then ``on_step_end(N)``) and late rows: an async
    result is logged at a later step's row, never over another validation's row, never dropped."""
    import wandb
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from sdcallbacks.testing.modules import perturb_lora

    wandb.teardown()
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    accelerator = Accelerator(cpu=True, log_with="wandb", project_dir=str(tmp_path / "script_out"))
    accelerator.init_trackers("loop", init_kwargs={"wandb": {"mode": "offline"}})
    cb = ValidationCallback.from_config(
        config(tmp_path, tagger_dir, scoring={"mode": scoring}), accelerator=accelerator
    )
    start(cb, tiny_modules)
    for step in range(1, 7):
        perturb_lora(tiny_modules, step)
        accelerator.log({"loss": float(step)}, step=step)
        cb.on_step_end(step)
    cb.on_train_end(6)
    accelerator.end_training()
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    wandb.teardown()

    run = read_offline_run(find_run_file(wandb_env))
    rows = [r for r in run.history if "val/tag_accuracy/mean" in r]
    assert sorted(r["train/global_step"] for r in rows) == [0, 2, 4, 6]  # every validation, once
    assert [r["loss"] for r in run.history if "loss" in r] == [float(s) for s in range(1, 7)]
    assert all(r["_step"] == r["loss"] for r in run.history if "loss" in r)
    if scoring == "sync":  # each validation in the row of its own step, beside that step's loss
        expected = [(0, None), (2, 2.0), (4, 4.0), (6, 6.0)]
        assert [(r["train/global_step"], r.get("loss")) for r in rows] == expected
    else:  # results land at or after their step, in increasing W&B rows
        assert all(r["_step"] >= r["train/global_step"] for r in rows)
        assert [r["_step"] for r in rows] == sorted({r["_step"] for r in rows})


def test_accelerates_real_tensorboard_tracker_read_back_with_tensorboard(tmp_path, tagger_dir, tiny_modules):
    """``Accelerator(log_with="tensorboard")``, as a user runs it, read back with TensorBoard's own
    ``EventAccumulator``: every logged ``val/*`` scalar at its step, one grid per prompt per validation, and
    each grid decodes to the grid of the images written to ``samples/``."""
    import io

    import numpy as np
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sdcallbacks.outputs import read_metrics
    from sdcallbacks.outputs.grid import prompt_grids

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    accelerator = Accelerator(cpu=True, log_with="tensorboard", project_dir=str(tmp_path / "logs"))
    accelerator.init_trackers("lora", config={"lr": 1e-4})
    cb = ValidationCallback.from_config(config(tmp_path, tagger_dir), accelerator=accelerator)
    start(cb, tiny_modules)
    for step in (1, 2, 3, 4):
        cb.on_step_end(step)
    cb.on_train_end(4)
    accelerator.end_training()
    AcceleratorState._reset_state(True)
    GradientState._reset_state()

    events = EventAccumulator(str(tmp_path / "logs" / "lora"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    rows = [r for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if r["type"] == "aggregate"]
    assert [r["step"] for r in rows] == [0, 2, 4]
    for key in {k for r in rows for k in r["values"]}:
        logged = [(r["step"], r["values"][key]) for r in rows if r["values"].get(key) is not None]
        read = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in read] == [s for s, _ in logged], key
        assert [v for _, v in read] == pytest.approx([v for _, v in logged], rel=1e-6), key  # float32 in TB
    images = [r for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if r["type"] == "image"]
    for prompt in ("red", "blue"):
        logged = events.Images(f"val/images/{prompt}")
        assert [e.step for e in logged] == [0, 2, 4]
        for event in logged:
            drawn = [r for r in images if r["step"] == event.step]
            expected = prompt_grids(cb.validation.jobs, [Image.open(r["image_path"]) for r in drawn])[prompt]
            decoded = Image.open(io.BytesIO(event.encoded_image_string))
            assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(expected.convert("RGB")))

    # HParams: the callback's config in the run's own folder, with the monitored key as metric, beside the
    # session accelerate's init_trackers(config=...) wrote for the script's own hyperparameters.
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    data = {tag: plugin_data_pb2.HParamsPluginData.FromString(raw) for tag, raw in content.items()}
    experiment = data["_hparams_/experiment"].experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["val/tag_accuracy/mean"]
    values = data["_hparams_/session_start_info"].session_start_info.hparams
    assert values["sdcallbacks/monitor"].string_value == "val/tag_accuracy/mean"
    assert values["sdcallbacks/schedule/every_n_steps"].number_value == 2
    assert json.loads(values["sdcallbacks/prompts"].string_value)[1]["name"] == "blue"
    (script_session,) = {p.parent for p in (tmp_path / "logs" / "lora").glob("*/events.out.tfevents.*")}
    script = EventAccumulator(str(script_session))
    script.Reload()
    start_info = plugin_data_pb2.HParamsPluginData.FromString(
        script.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    ).session_start_info
    assert start_info.hparams["lr"].number_value == pytest.approx(1e-4)


def _mlflow_accelerator(tmp_path, monkeypatch):
    """``Accelerator(log_with="mlflow")`` on a local SQLite store (MLflow 3's local backend; no server)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    pytest.importorskip("mlflow", reason="MLflow is in [dev]: pip install -e '.[dev]'")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    accelerator = Accelerator(cpu=True, log_with="mlflow")
    # The run's artifacts (the grids) under tmp_path: MLflow's default is ./mlruns in the working directory.
    artifacts = {"mlflow": {"logging_dir": str(tmp_path / "artifacts")}}
    accelerator.init_trackers("lora", config={"lr": 1e-4}, init_kwargs=artifacts)
    return accelerator


def _end(accelerator):
    from accelerate.state import AcceleratorState, GradientState

    accelerator.end_training()
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def test_accelerates_real_mlflow_tracker_read_back_with_its_client(
    tmp_path, tagger_dir, tiny_modules, monkeypatch
):
    """Every ``val/*`` scalar of ``metrics.jsonl`` at its step through ``MlflowClient``, each prompt's grid
    an MLflow image at its step that decodes to the grid of ``samples/``, the summary as tags."""
    import re

    import numpy as np
    from mlflow import MlflowClient
    from PIL import Image

    from sdcallbacks.outputs import read_metrics
    from sdcallbacks.outputs.grid import prompt_grids

    accelerator = _mlflow_accelerator(tmp_path, monkeypatch)
    run_id = accelerator.get_tracker("mlflow", unwrap=False).tracker.info.run_id
    cb = ValidationCallback.from_config(config(tmp_path, tagger_dir), accelerator=accelerator)
    start(cb, tiny_modules)
    for step in (1, 2, 3, 4):
        cb.on_step_end(step)
    cb.on_train_end(4)
    _end(accelerator)

    client = MlflowClient()
    rows = [r for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if r["type"] == "aggregate"]
    for key in {k for r in rows for k in r["values"]}:
        logged = [(r["step"], r["values"][key]) for r in rows if r["values"].get(key) is not None]
        read = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert [s for s, _ in read] == [s for s, _ in logged], key
        assert [v for _, v in read] == pytest.approx([v for _, v in logged]), key
    stored = [a.path for a in client.list_artifacts(run_id, "images")]
    images = [r for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if r["type"] == "image"]
    for prompt in ("red", "blue"):
        found = {}
        for path in stored:  # MLflow's own naming: <key with / as ~>+step+<step>+timestamp+...png
            match = re.match(rf"images/val~images~{prompt}\+step\+(\d+)\+.*(?<!compressed)\.png$", path)
            if match:
                found[int(match[1])] = client.download_artifacts(run_id, path, str(tmp_path / "down"))
        assert sorted(found) == [0, 2, 4], stored
        for step, local in found.items():
            drawn = [r for r in images if r["step"] == step]
            expected = prompt_grids(cb.validation.jobs, [Image.open(r["image_path"]) for r in drawn])[prompt]
            assert np.array_equal(np.asarray(Image.open(local).convert("RGB")), np.asarray(expected))
    tags = client.get_run(run_id).data.tags
    assert tags["best/step"] == str(cb.best_step) and tags["early_stop/reason"] == "not_stopped"
    assert client.get_run(run_id).data.params["lr"] == "0.0001"


def test_an_mlflow_store_that_cannot_be_written_warns_once_and_training_goes_on(
    tmp_path, tagger_dir, tiny_modules, monkeypatch, caplog
):
    accelerator = _mlflow_accelerator(tmp_path, monkeypatch)
    # The run's artifact folder becomes a file (a full or lost disk): no image can be stored.
    from mlflow import MlflowClient

    run_id = accelerator.get_tracker("mlflow", unwrap=False).tracker.info.run_id
    artifacts = Path(MlflowClient().get_run(run_id).info.artifact_uri.removeprefix("file://"))
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.parent.mkdir(parents=True, exist_ok=True)
    artifacts.write_text("not a folder")
    cb = ValidationCallback.from_config(config(tmp_path, tagger_dir), accelerator=accelerator)
    start(cb, tiny_modules)
    with caplog.at_level(logging.WARNING, logger="sdcallbacks"):
        for step in (1, 2, 3, 4):
            cb.on_step_end(step)
    _end(accelerator)
    warnings = [r.getMessage() for r in caplog.records if "tracker 'mlflow' failed" in r.getMessage()]
    assert len(warnings) == 1, warnings
    from sdcallbacks.outputs import read_metrics

    steps = [r["step"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if r["type"] == "aggregate"]
    assert steps == [0, 2, 4]  # every validation still in the local files
