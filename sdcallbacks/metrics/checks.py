"""Checks of every path in the metric sections, made before anything loads.

A reference folder that does not exist, a local tagger folder without ``model.onnx`` or a weights override
that points nowhere would otherwise fail every validation of a run that goes on training for hours, with
early stopping never acting. Each problem names its key. Hub ids are not looked up here (that needs the
network), except that offline (``HF_HUB_OFFLINE``) their files must be in the hub cache; local paths are
held to what loading will need. Identity references must
show a face to MTCNN (a cheap check: its weights ship with facenet-pytorch).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from sdcallbacks.config import metrics as mc
from sdcallbacks.metrics.backbones.clip import check_local_clip
from sdcallbacks.metrics.images import UNREADABLE, image_files, image_folder_problem, read_image
from sdcallbacks.sampling.rng import isolated_rng
from sdcallbacks.weights import WeightsNotFoundError, hub_offline, is_hub_id, resolve_local_file

_CCIP_FILES = ("model_feat.onnx", "model_metrics.onnx", "metrics.json")
# Sections whose model comes from ``resolve_file``: the field (one of ``MODEL_SOURCE_FIELDS``) and the files
# a local folder must hold.
_MODEL_FILES: dict[type[BaseModel], list[tuple[str, Callable[[BaseModel], tuple[str, ...]]]]] = {
    mc.TagAccuracyConfig: [("model", lambda c: ("model.onnx", "selected_tags.csv"))],
    mc.AestheticAnimeConfig: [("model", lambda c: ("model.onnx",))],
    mc.CcipConfig: [("model", lambda c: tuple(f"{c.variant}/{n}" for n in _CCIP_FILES))],
    mc.AestheticLaionConfig: [("head", lambda c: (c.head_filename,))],
    mc.Hpsv2Config: [("model", lambda c: (c.filename,))],
    mc.ImageRewardConfig: [
        ("model", lambda c: ("ImageReward.pt", "med_config.json")),
        ("tokenizer", lambda c: ("vocab.txt",)),
    ],
    mc.PickScoreConfig: [
        ("model", lambda c: ("config.json",)),
        ("processor", lambda c: ("preprocessor_config.json",)),
    ],
}


def _hub_cache_problem(source: str, filename: str) -> str | None:
    """Offline (``HF_HUB_OFFLINE``), a hub file must already be in the hub cache: the load would fail."""
    if not hub_offline():
        return None
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(source, filename), str):
        return None
    return f"{filename} of {source!r} is not in the hub cache and downloads are off (HF_HUB_OFFLINE)"


FACE_CHECK_IMAGES = 4  # reference photos MTCNN looks at before giving up (about 0.1 s each on a CPU)


def face_problem(config: mc.IdentityConfig) -> str | None:
    """Why the identity references cannot give a face embedding: MTCNN (weights bundled with
    facenet-pytorch, so this needs no download) finds no face in the first readable photos, with the
    config's detection settings. Random streams are restored: building MTCNN draws its initialisation."""
    from facenet_pytorch import MTCNN

    with isolated_rng():
        detector = MTCNN(min_face_size=config.min_face_size, thresholds=list(config.detection_thresholds))
        tried = 0
        for path in image_files(Path(config.references).expanduser(), "reference images"):
            try:
                image = read_image(path)
            except UNREADABLE:
                continue
            boxes, _ = detector.detect(image)
            if boxes is not None and len(boxes):
                return None
            tried += 1
            if tried == FACE_CHECK_IMAGES:
                break
    return (
        f"reference images: MTCNN found no face in the first {tried} readable images of {config.references} "
        f"(min_face_size {config.min_face_size}, thresholds {list(config.detection_thresholds)}); identity "
        "needs photos of the person's face"
    )


def _section_problems(key: str, section: BaseModel) -> list[str]:
    problems = []
    references = getattr(section, "references", None)
    if references is not None:
        why = image_folder_problem(references, "reference images")
        if why is None and isinstance(section, mc.IdentityConfig):
            why = face_problem(section)
        if why:
            problems.append(f"{key}.references: {why}")
    if isinstance(section, mc.ValLossConfig):
        why = image_folder_problem(section.data, "held-out images")
        if why:
            problems.append(f"{key}.data: {why}")
    for name in mc.WEIGHTS_FILE_FIELDS:  # optional overrides of a library's cache: given, they must exist
        value = getattr(section, name, None)
        if value is not None and not Path(value).expanduser().is_file():
            problems.append(f"{key}.{name}: {value} is not a file")
    for name, files in _MODEL_FILES.get(type(section), []):
        source = getattr(section, name)
        for filename in files(section):
            if is_hub_id(source):
                why = _hub_cache_problem(source, filename)
            else:
                try:
                    resolve_local_file(source, filename)
                    why = None
                except WeightsNotFoundError as err:
                    why = err.reason
            if why:
                problems.append(f"{key}.{name}: {why}")
                break
    clip = getattr(section, "clip", None)
    if isinstance(clip, mc.ClipModelConfig):
        try:
            check_local_clip(clip)
        except WeightsNotFoundError as err:
            problems.append(f"{key}.clip: {err.reason}")
    return problems


def metric_path_problems(metrics: mc.MetricsConfig, prefix: str = "metrics") -> list[str]:
    """One line per unusable path of an enabled metric section (and ``val_loss``), keyed like the config."""
    problems = []
    for name in type(metrics).model_fields:
        section = getattr(metrics, name)
        if isinstance(section, BaseModel):
            problems.extend(_section_problems(f"{prefix}.{name}", section))
    return problems
