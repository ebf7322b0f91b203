"""``sdcallbacks score`` as a user runs it: images without prompts, where the scores go, hostile weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from sdcallbacks.cli import main


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name, colour in [("a", (220, 30, 30)), ("b", (30, 30, 220)), ("c", (30, 200, 30))]:
        Image.new("RGB", (48, 48), colour).save(images / f"{name}.png")
    (images / "a.txt").write_text("red square, white background", encoding="utf-8")
    (images / "b.txt").write_text("blue square, white background", encoding="utf-8")
    return images  # c.png has no prompt at all


def clip_config(tmp_path, backbones, **extra) -> Path:
    path = tmp_path / "metrics.yaml"
    clip = f'{{model: "{backbones.clip}", pretrained: null}}'
    lines = [f"  clip_score: {{clip: {clip}}}"] + [f"  {k}: {v}" for k, v in extra.items()]
    path.write_text("metrics:\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_an_image_without_a_prompt_is_skipped_by_prompt_metrics(tmp_path, folder, backbones, capsys):
    out = tmp_path / "scores.jsonl"
    argv = ["score", str(folder), "--config", str(clip_config(tmp_path, backbones)), "--out", str(out)]
    assert main(argv) == 0
    records = {Path(r["image_path"]).name: r for r in rows(out) if r["type"] == "image"}
    assert records["c.png"]["scores"]["clip_score"] is None  # not compared with ""
    scored = [records[n]["scores"]["clip_score"] for n in ("a.png", "b.png")]
    assert all(isinstance(v, float) for v in scored)
    values = rows(out)[-1]["values"]
    assert values["score/clip_score/skipped"] == 1.0 and values["score/clip_score/n"] == 2.0
    assert values["score/clip_score/mean"] == pytest.approx(max(sum(scored) / 2, 0.0))
    assert "1 images have no prompt" in capsys.readouterr().out


def test_the_same_scores_for_captioned_images_with_or_without_an_unprompted_neighbour(
    tmp_path, folder, backbones
):
    out = tmp_path / "all.jsonl"
    config = str(clip_config(tmp_path, backbones))
    assert main(["score", str(folder), "--config", config, "--out", str(out)]) == 0
    (folder / "c.png").unlink()
    alone = tmp_path / "alone.jsonl"
    assert main(["score", str(folder), "--config", config, "--out", str(alone)]) == 0

    def by_name(path):
        return {Path(r["image_path"]).name: r["scores"] for r in rows(path) if r["type"] == "image"}

    with_c, without_c = by_name(out), by_name(alone)
    for name in ("a.png", "b.png"):
        assert with_c[name]["clip_score"] == pytest.approx(without_c[name]["clip_score"], rel=1e-5)


def test_out_in_a_missing_folder_is_created_and_a_bad_out_fails_before_scoring(
    tmp_path, folder, backbones, capsys, monkeypatch
):
    config = str(clip_config(tmp_path, backbones))
    out = tmp_path / "new" / "nested" / "scores.jsonl"
    assert main(["score", str(folder), "--config", config, "--out", str(out)]) == 0
    assert rows(out)[-1]["type"] == "aggregate"

    import sdcallbacks.score_command

    def must_not_score(*args, **kwargs):
        raise AssertionError("scoring started although --out cannot be written")

    monkeypatch.setattr(sdcallbacks.score_command, "score_folder", must_not_score)
    (tmp_path / "a_file").write_text("x", encoding="utf-8")
    for bad, message in [
        (tmp_path / "a_file" / "scores.jsonl", "cannot write the scores file"),
        (tmp_path, "--out is a folder"),
    ]:
        assert main(["score", str(folder), "--config", config, "--out", str(bad)]) == 2
        assert message in capsys.readouterr().err


class Payload:
    """What a malicious "weights" file carries: code that runs when the file is unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_a_malicious_weights_file_is_refused_without_advising_unsafe_loading(
    tmp_path, folder, backbones, capsys
):
    marker = tmp_path / "executed"
    evil = tmp_path / "evil_head.pth"
    torch.save({"layers.0.weight": Payload(marker)}, evil)
    config = clip_config(tmp_path, backbones)
    config.write_text(
        config.read_text(encoding="utf-8").replace("clip_score:", "aesthetic_laion:", 1).rstrip("}\n")
        + f"}}, head: {evil}}}\n",
        encoding="utf-8",
    )
    assert main(["score", str(folder), "--config", str(config), "--out", str(tmp_path / "s.jsonl")]) == 2
    err = capsys.readouterr().err
    assert f"{evil}: not a plain state_dict" in err
    assert "weights_only" not in err and "Traceback" not in err
    assert not marker.exists()  # nothing in the file ran
