"""The metric suite against references, peer implementations and bad input (offline, tiny backbones)."""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from sdcallbacks.aggregation.records import ImageRecord, aggregate, bootstrap_ci, set_values
from sdcallbacks.config import ClipModelConfig, MetricsConfig, PromptDefaults, PromptEntry
from sdcallbacks.config import metrics as mc
from sdcallbacks.metrics import METRICS, BackbonePool, ImageBatch, KeySpec, build_metrics
from sdcallbacks.metrics.backbones.base import Backbone
from sdcallbacks.metrics.backbones.clip import ClipBackbone
from sdcallbacks.metrics.images import ImageFolder, ImageFolderError
from sdcallbacks.prompts.library import expand_jobs, resolve_prompts
from sdcallbacks.testing.shapes import draw_square
from sdcallbacks.weights import WeightsNotFoundError

SHARED = Path(__file__).resolve().parents[2] / "shared"


def jobs_for(*prompts, num_images=1):
    entries = [PromptEntry(prompt=p) for p in prompts]
    return expand_jobs(resolve_prompts(entries, PromptDefaults(num_images=num_images), 0))


def squares(n, size=64, seed=0, colours=("red", "green", "blue", "yellow")):
    rng = np.random.default_rng(seed)
    return [draw_square(colours[i % len(colours)], "white", size, rng) for i in range(n)]


def folder_of(path: Path, images) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.save(path / f"{i:02d}.png")
    return path


def clip_config(backbones):
    return ClipModelConfig(model=backbones.clip, pretrained=None)


# -- identity: MTCNN with its real bundled weights -------------------------------------------------


def test_mtcnn_finds_one_face_in_astronaut_and_none_in_a_flat_image(backbones, astronaut, tmp_path, caplog):
    from sdcallbacks.metrics.backbones.faces import FaceEmbedder

    faces = FaceEmbedder(str(backbones.facenet))
    faces.ensure_loaded()
    boxes, probs = faces.detector.detect(astronaut)
    assert boxes is not None and len(boxes) == 1 and float(np.asarray(probs).astype(float)[0]) > 0.99
    flat = Image.new("RGB", (256, 256), (120, 160, 200))
    assert faces.detect(flat) is None

    refs = folder_of(
        tmp_path / "refs", [astronaut, flat]
    )  # a reference photo without a face: warned, skipped
    metric = METRICS["identity"](mc.IdentityConfig(references=refs, weights=str(backbones.facenet)))
    with caplog.at_level(logging.WARNING, logger="sdcallbacks"):
        scores = metric.score([astronaut, flat, astronaut.convert("L")], jobs_for("a", "b", "c"))
    assert "no face in 1 of 2 reference photos" in caplog.text
    assert scores["identity/face_rate"] == [1.0, 0.0, 1.0]
    assert scores["identity"][1] is None and scores["identity/copy"][1] is None
    assert scores["identity"][0] == pytest.approx(1.0, abs=1e-5)  # the only reference face is this one
    assert "may be memorising" in caplog.text
    values = aggregate(records_from(scores), specs=metric.key_specs())
    assert values["val/identity/face_rate/mean"] == pytest.approx(2 / 3)
    assert values["val/identity/skipped"] == 1.0


def test_multiface_photo_detects_several_and_keeps_the_largest(backbones):
    path = SHARED / "data" / "multiface.jpg"
    if not path.is_file():
        pytest.skip("../shared/data is absent")
    from sdcallbacks.metrics.backbones.faces import FaceEmbedder

    faces = FaceEmbedder(str(backbones.facenet))
    faces.ensure_loaded()
    image = Image.open(path).convert("RGB")
    boxes, probs = faces.detector.detect(image)
    assert len(boxes) > 1
    probs = np.asarray(probs).astype(float)  # numpy 2 can hand back an object array
    assert np.all(probs > 0.6)
    assert faces.embed([image]).isfinite().all()


def test_copy_threshold_warns_for_each_face_closer_to_one_reference(backbones, astronaut, tmp_path, caplog):
    """``identity/copy`` is the cosine to the closest reference photo; images above ``copy_threshold`` are
    counted in one warning (memorisation), those at or below it are not."""
    refs = folder_of(tmp_path / "refs", [astronaut])
    mirrored = astronaut.transpose(Image.FLIP_LEFT_RIGHT)
    images, jobs = [astronaut, mirrored], jobs_for("a", "b")

    def score(threshold):
        config = mc.IdentityConfig(references=refs, weights=str(backbones.facenet), copy_threshold=threshold)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sdcallbacks"):
            copies = METRICS["identity"](config).score(images, jobs)["identity/copy"]
        return copies, caplog.text

    copies, _ = score(0.9)
    assert copies[0] == pytest.approx(1.0, abs=1e-5) and copies[1] < copies[0]  # the reference itself
    _, between = score((copies[0] + copies[1]) / 2)
    assert "1 image(s) are closer than" in between
    _, below = score(copies[1] - 1e-3)
    assert "2 image(s) are closer than" in below
    _, at_most = score(1.0)
    assert "closer than" not in at_most


def test_identity_references_without_any_face_are_an_error(backbones, tmp_path):
    refs = folder_of(tmp_path / "refs", [Image.new("RGB", (64, 64), (0, 0, 0))])
    metric = METRICS["identity"](mc.IdentityConfig(references=refs, weights=str(backbones.facenet)))
    with pytest.raises(ImageFolderError, match="no face found"):
        metric.score(squares(1), jobs_for("a"))


def test_missing_facenet_weights_offline_is_one_clear_error(tmp_path, monkeypatch):
    from sdcallbacks.metrics.backbones.faces import FaceEmbedder

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as info:
        FaceEmbedder().load()
    message = str(info.value)
    assert "20180402-114759-vggface2.pt" in message and str(tmp_path / "torch" / "checkpoints") in message
    assert "github.com/timesler/facenet-pytorch" in message


def records_from(scores, prompts=None):
    n = len(next(iter(scores.values())))
    prompts = prompts or [f"p{i}" for i in range(n)]
    return [
        ImageRecord(1, "model", prompts[i], 0, i, i, "x", scores={k: v[i] for k, v in scores.items()})
        for i in range(n)
    ]


# -- LAION aesthetic heads: the real published files -----------------------------------------------


@pytest.mark.parametrize("filename", ["sac+logos+ava1-l14-linearMSE.pth", "sa_0_4_vit_l_14_linear.pth"])
def test_real_laion_heads_load_strictly_and_match_an_independent_linear_stack(filename):
    from sdcallbacks.metrics.aesthetic import load_aesthetic_head

    path = SHARED / "weights" / filename
    if not path.is_file():
        pytest.skip("../shared/weights is absent")
    head = load_aesthetic_head(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    x = torch.nn.functional.normalize(torch.randn(5, 768, generator=torch.Generator().manual_seed(0)), dim=1)
    expected = affine_stack(state, x)  # dropout is the identity in eval
    with torch.no_grad():
        assert torch.allclose(head(x), expected, atol=1e-5)
    assert not head.training


def affine_stack(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """A LAION head re-derived from its state_dict: the affine layers in key order, no activations."""
    names = {k.rsplit(".", 1)[0] if "." in k else "" for k in state}
    for layer in sorted(names, key=lambda k: [int(p) for p in k.split(".")[1:]]):
        prefix = f"{layer}." if layer else ""
        x = x @ state[f"{prefix}weight"].T + state[f"{prefix}bias"]
    return x


def test_aesthetic_laion_scores_normalised_clip_embeddings_and_good_rate(backbones):
    import open_clip

    config = mc.AestheticLaionConfig(head=str(backbones.laion_head), clip=clip_config(backbones))
    metric = METRICS["aesthetic_laion"](config)
    images = squares(4)
    scores = metric.score(images, jobs_for("a", "b", "c", "d"))
    # Independently: open_clip's own model and preprocessing, L2-normalised, through a plain affine stack.
    model, _, preprocess = open_clip.create_model_and_transforms(backbones.clip)
    with torch.no_grad():
        features = model.eval().encode_image(torch.stack([preprocess(im) for im in images]))
    features = features / features.norm(dim=1, keepdim=True)
    state = torch.load(backbones.laion_head, map_location="cpu", weights_only=True)
    expected = affine_stack(state, features).squeeze(1)
    assert scores["aesthetic_laion"] == pytest.approx(expected.tolist(), abs=1e-4)
    assert len(set(scores["aesthetic_laion"])) == 4  # the images differ, so must their scores
    threshold = float(np.median(scores["aesthetic_laion"]))
    specs = {"aesthetic_laion": KeySpec(True, good_threshold=threshold)}
    values = aggregate(records_from(scores), specs=specs)
    assert values["val/aesthetic_laion/good_rate"] == np.mean(
        [v >= threshold for v in scores["aesthetic_laion"]]
    )


def test_laion_head_with_the_wrong_embedding_size_is_a_clear_error(backbones, tmp_path):
    from sdcallbacks.testing.backbones import write_laion_head

    head = write_laion_head(tmp_path / "head768.pth", in_features=768)
    metric = METRICS["aesthetic_laion"](mc.AestheticLaionConfig(head=str(head), clip=clip_config(backbones)))
    with pytest.raises(ValueError, match="expects 768-d CLIP embeddings"):
        metric.ensure_loaded()


# -- CLIP score and CLIP-I -------------------------------------------------------------------------


class _OpenClipAsHF(torch.nn.Module):
    """An open_clip model behind the two methods torchmetrics' CLIPScore calls on a HF CLIPModel."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = SimpleNamespace()  # no text_config: torchmetrics skips its own truncation

    def get_image_features(self, pixel_values):
        return self.model.encode_image(pixel_values)

    def get_text_features(self, input_ids, attention_mask=None):
        ids = torch.nn.functional.pad(input_ids, (0, 77 - input_ids.shape[1]))
        return self.model.encode_text(ids)


def test_clip_score_matches_torchmetrics_on_the_same_model(backbones, clip_tokenizer):
    from torchmetrics.multimodal.clip_score import CLIPScore
    from transformers import CLIPImageProcessor, CLIPProcessor

    metric = METRICS["clip_score"](mc.ClipScoreConfig(clip=clip_config(backbones)))
    images = [*squares(4, size=64), squares(1, size=96, seed=3)[0]]
    prompts = ["red square, white background", "a green square", "blue", "yellow square on white", "red"]
    scores = metric.score(images, jobs_for(*prompts))
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}, resample=3
        ),
        tokenizer=clip_tokenizer,
    )
    reference = CLIPScore(model_name_or_path=lambda: (_OpenClipAsHF(metric.clip.model), processor))
    tensors = [torch.from_numpy(np.asarray(im)).permute(2, 0, 1) for im in images]
    reference.update(tensors, prompts)
    values = aggregate(records_from(scores), specs=metric.key_specs())
    assert values["val/clip_score/mean"] == pytest.approx(float(reference.compute()), abs=1e-4)


def test_clip_score_mean_is_clamped_at_zero_like_torchmetrics():
    records = records_from({"clip_score": [-3.0, -1.0]})
    values = aggregate(records, specs={"clip_score": KeySpec(True, mean_floor=0.0)})
    assert values["val/clip_score/mean"] == 0.0


def test_long_prompts_keep_the_end_token_and_warn(backbones, caplog):
    clip = ClipBackbone(clip_config(backbones))
    long_prompt = ", ".join(f"tag{i}" for i in range(60))
    with caplog.at_level(logging.WARNING, logger="sdcallbacks"):
        clip.embed_texts([long_prompt, "short"])
    assert clip.truncated_prompts == 1 and "CLIP tokens" in caplog.text
    tokens = clip.tokenizer([long_prompt])[0]
    assert int(tokens[-1]) == 49407  # end-of-text kept last


def test_clip_i_is_mean_cosine_to_each_reference(backbones, tmp_path):
    refs = squares(3, seed=5)
    config = mc.ClipIConfig(references=folder_of(tmp_path / "refs", refs), clip=clip_config(backbones))
    metric = METRICS["clip_i"](config)
    images = squares(2, seed=7)
    scores = metric.score(images, jobs_for("a", "b"))
    f = torch.nn.functional.normalize(metric.clip.embed(images), dim=1)
    r = torch.nn.functional.normalize(metric.clip.embed(ImageFolder.read(tmp_path / "refs").images), dim=1)
    assert scores["clip_i"] == pytest.approx((f @ r.T).mean(1).tolist(), abs=1e-5)


def test_local_dir_without_weights_is_an_error_not_random_weights(tmp_path):
    (tmp_path / "open_clip_config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(WeightsNotFoundError, match=r"open_clip_model\.safetensors"):
        ClipBackbone(ClipModelConfig(model=f"local-dir:{tmp_path}", pretrained=None)).load()


def test_openai_clip_offline_without_cache_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(WeightsNotFoundError, match="local-dir"):
        ClipBackbone(ClipModelConfig()).load()


# -- shared features and reference cache -----------------------------------------------------------


def test_clip_runs_once_per_image_for_every_metric_that_uses_it(backbones, tmp_path, monkeypatch):
    calls = []
    original = ClipBackbone.forward
    monkeypatch.setattr(
        ClipBackbone, "forward", lambda self, ims: calls.append(len(ims)) or original(self, ims)
    )
    refs = folder_of(tmp_path / "refs", squares(3, seed=9))
    clip = clip_config(backbones)
    config = MetricsConfig(
        clip_score={"clip": clip},
        clip_i={"references": refs, "clip": clip},
        aesthetic_laion={"head": str(backbones.laion_head), "clip": clip},
        diversity_clip={"clip": clip},
        kid={"references": refs, "clip": clip},
    )
    pool = BackbonePool()
    metrics = build_metrics(config.enabled(), pool=pool)
    batch = ImageBatch.of(squares(6), jobs_for("a", "b", num_images=3))
    for metric in metrics:
        metric.score(batch)
    assert len(pool) == 1
    assert sum(calls) == 6 + 3  # each image once, each reference once


def test_reference_embeddings_are_cached_on_disk_by_content(backbones, tmp_path, monkeypatch):
    refs = folder_of(tmp_path / "refs", squares(2, seed=1))
    config = mc.ClipIConfig(references=refs, clip=clip_config(backbones))
    first = METRICS["clip_i"](config, pool=BackbonePool(tmp_path / "cache"))
    first.ensure_loaded()
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1

    calls = []
    original = ClipBackbone.forward
    monkeypatch.setattr(
        ClipBackbone, "forward", lambda self, ims: calls.append(len(ims)) or original(self, ims)
    )
    second = METRICS["clip_i"](config, pool=BackbonePool(tmp_path / "cache"))
    second.ensure_loaded()
    assert calls == [] and torch.equal(first.references, second.references)
    squares(1, seed=2)[0].save(refs / "00.png")  # a changed photo: a new entry, not stale features
    third = METRICS["clip_i"](config, pool=BackbonePool(tmp_path / "cache"))
    third.ensure_loaded()
    assert calls == [2] and len(list((tmp_path / "cache").glob("*.safetensors"))) == 2


# -- diversity -------------------------------------------------------------------------------------


def test_lpips_diversity_equals_lpips_package_pairwise_mean(backbones):
    import lpips

    from sdcallbacks.metrics.backbones.lpips_net import image_tensor, load_trunk

    metric = METRICS["diversity"](mc.DiversityConfig(trunk_weights=str(backbones.alexnet)))
    images = squares(3, size=64, seed=2) + squares(2, size=48, seed=4) + squares(1, seed=6)
    jobs = jobs_for("a", num_images=3) + jobs_for("b", num_images=2)[:2] + jobs_for("c")
    jobs = expand_jobs(
        resolve_prompts(
            [
                PromptEntry(prompt="a", num_images=3),
                PromptEntry(prompt="b", num_images=2),
                PromptEntry(prompt="c"),
            ],
            PromptDefaults(num_images=1),
            0,
        )
    )
    scores = metric.score(images, jobs)["diversity"]

    reference = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    load_trunk(reference, backbones.alexnet)
    with torch.no_grad():

        def d(i, j):
            return float(reference(image_tensor(images[i])[None], image_tensor(images[j])[None]))

        div_a = np.mean([d(0, 1), d(0, 2), d(1, 2)])
    assert np.mean(scores[:3]) == pytest.approx(div_a, abs=1e-5)
    assert scores[3] == pytest.approx(d(3, 4), abs=1e-5) and scores[4] == pytest.approx(d(3, 4), abs=1e-5)
    assert scores[5] is None  # a prompt with one image has no pair


def test_clip_diversity_is_mean_pairwise_one_minus_cosine(backbones):
    metric = METRICS["diversity_clip"](mc.DiversityClipConfig(clip=clip_config(backbones)))
    images = squares(3, seed=11)
    scores = metric.score(images, jobs_for("a", num_images=3))["diversity_clip"]
    f = torch.nn.functional.normalize(metric.clip.embed(images), dim=1)
    pairs = [1 - float(f[i] @ f[j]) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert np.mean(scores) == pytest.approx(np.mean(pairs), abs=1e-6)


# -- distribution distances ------------------------------------------------------------------------


def test_kid_matches_torchmetrics_given_the_same_features_and_leaves_global_rng(backbones, tmp_path):
    from torchmetrics.image.kid import KernelInceptionDistance

    from sdcallbacks.metrics.distribution.features import FeatureRows

    refs = folder_of(tmp_path / "refs", squares(12, seed=21))
    metric = METRICS["kid"](mc.KidConfig(references=refs, clip=clip_config(backbones), subsets=20, seed=3))
    images = squares(8, seed=22)
    torch.manual_seed(123)
    random.seed(5)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    values = metric.score(images, jobs_for(*"abcdefgh"))
    assert torch.equal(before[0], torch.get_rng_state()) and before[1] == random.getstate()
    assert np.array_equal(before[2], np.random.get_state()[1])

    fake = metric.clip.embed(images).double()
    real = metric.clip.embed(ImageFolder.read(refs).images).double()
    reference = KernelInceptionDistance(feature=FeatureRows(fake.shape[1]), subsets=20, subset_size=8)
    reference.update(real, real=True)
    reference.update(fake, real=False)
    torch.manual_seed(3)
    mean, std = reference.compute()
    assert values["kid"] == pytest.approx(float(mean), abs=1e-4)
    assert values["kid/std"] == pytest.approx(float(std), abs=1e-4)
    assert metric.score(images, jobs_for(*"abcdefgh")) == values  # seeded: reproducible


def test_cmmd_matches_the_paper_formula(backbones, tmp_path):
    refs = folder_of(tmp_path / "refs", squares(5, seed=31))
    metric = METRICS["cmmd"](mc.CmmdConfig(references=refs, clip=clip_config(backbones)))
    images = squares(4, seed=32)
    value = metric.score(images, jobs_for(*"abcd"))["cmmd"]
    x = metric.clip.embed(ImageFolder.read(refs).images).double().numpy()
    y = metric.clip.embed(images).double().numpy()
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)

    def k(a, b):  # Gaussian RBF, sigma 10, every entry (biased)
        return np.mean([math.exp(-np.sum((u - v) ** 2) / (2 * 10.0**2)) for u in a for v in b])

    assert value == pytest.approx(1000 * (k(x, x) + k(y, y) - 2 * k(x, y)), rel=1e-6, abs=1e-9)
    assert metric.score(refs_images := ImageFolder.read(refs).images, jobs_for(*"abcde"))[
        "cmmd"
    ] == pytest.approx(0.0, abs=1e-9)
    assert len(refs_images) == 5


def test_a_set_metrics_interval_is_the_percentile_bootstrap_over_the_validation_images(backbones, tmp_path):
    """cmmd/ci_low and /ci_high re-derived: resample the generated images with replacement (the same
    draws: torch.randint from a generator seeded 0), the paper's formula in numpy on each resample, the
    2.5 and 97.5 percentiles; the references stay fixed. ci_resamples: 0 logs no interval."""
    refs = folder_of(tmp_path / "refs", squares(5, seed=31))
    config = mc.CmmdConfig(references=refs, clip=clip_config(backbones), ci_resamples=40)
    metric = METRICS["cmmd"](config)
    images = squares(6, seed=33)
    values = metric.score(images, jobs_for(*"abcdef"))
    x = metric.clip.embed(ImageFolder.read(refs).images).double().numpy()
    y = metric.clip.embed(images).double().numpy()
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)

    def cmmd(a, b):
        def k(u, v):
            squared = ((u[:, None, :] - v[None, :, :]) ** 2).sum(-1)
            return np.exp(-squared / 200.0).mean()

        return 1000 * (k(a, a) + k(b, b) - 2 * k(a, b))

    generator = torch.Generator().manual_seed(0)
    resampled = [cmmd(x, y[torch.randint(6, (6,), generator=generator).numpy()]) for _ in range(40)]
    low, high = np.percentile(resampled, [2.5, 97.5])
    assert values["cmmd/ci_low"] == pytest.approx(low, rel=1e-6)
    assert values["cmmd/ci_high"] == pytest.approx(high, rel=1e-6)
    assert values["cmmd/ci_low"] < values["cmmd/ci_high"]
    assert {"cmmd/ci_low", "cmmd/ci_high"} <= set(metric.output_keys())
    from sdcallbacks.aggregation.keys import expected_keys

    keys = expected_keys([metric], ["a"])
    assert {"val/cmmd", "val/cmmd/delta", "val/cmmd/ci_low", "val/cmmd/ci_high"} <= set(keys)
    assert "val/cmmd/ci_low/delta" not in keys  # an interval has no delta of its own
    off = METRICS["cmmd"](mc.CmmdConfig(references=refs, clip=clip_config(backbones), ci_resamples=0))
    assert set(off.score(images, jobs_for(*"abcdef"))) == {"cmmd"} == set(off.output_keys())


def test_a_set_metrics_interval_reaches_the_leaderboard_without_a_delta_of_its_own():
    from sdcallbacks.aggregation.records import set_values
    from sdcallbacks.evaluation.leaderboard import ScoredModel, build_leaderboard

    sets = {"cmmd": 0.5, "cmmd/ci_low": 0.3, "cmmd/ci_high": 0.8}
    values = set_values(sets, {"cmmd": 0.9, "cmmd/ci_low": 0.7, "cmmd/ci_high": 1.1})
    assert values == {
        "val/cmmd": 0.5,
        "val/cmmd/delta": pytest.approx(-0.4),
        "val/cmmd/ci_low": 0.3,
        "val/cmmd/ci_high": 0.8,
    }
    base = ScoredModel("base", "base", "b", None, None, set_values({"cmmd": 0.9}), [], {"cmmd": 0.9})
    tuned = ScoredModel("step_2", "lora", "s", 2, None, values, [], sets)
    board = build_leaderboard([base, tuned], {}, "val/cmmd", "min")
    assert {"val/cmmd", "val/cmmd/ci_low", "val/cmmd/ci_high"} <= set(board.columns)
    assert "| best | step_2 | 2 |  | 0.5000 [0.3000, 0.8000] |" in board.to_markdown()


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """FID re-derived: |mu_x - mu_y|^2 + tr(S_x + S_y - 2 sqrtm(S_x S_y)), unbiased covariances.

    With S_x = A A^T and S_y = B B^T (A, B: the centred rows over sqrt(n - 1), one column per image), the
    non-zero eigenvalues of S_x S_y are those of M M^T with M = A^T B, so tr sqrtm(S_x S_y) is the sum of
    M's singular values: exact, in float64, without a 2048 x 2048 matrix square root (scipy's takes 30 s
    here and is less accurate)."""
    a = (x - x.mean(0)).T.astype(np.float64) / np.sqrt(len(x) - 1)
    b = (y - y.mean(0)).T.astype(np.float64) / np.sqrt(len(y) - 1)
    root_trace = np.linalg.svd(a.T @ b, compute_uv=False).sum()
    mean_term = np.sum((x.mean(0, dtype=np.float64) - y.mean(0, dtype=np.float64)) ** 2)
    return float(mean_term + (a**2).sum() + (b**2).sum() - 2 * root_trace)


def inception_score(logits: np.ndarray) -> float:
    """IS re-derived for one split: exp(mean over images of KL(p(y|x) || p(y)))."""
    log_p = logits - logits.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    p = np.exp(log_p)
    marginal = p.mean(0, keepdims=True)
    return float(np.exp((p * (log_p - np.log(marginal))).sum(1).mean()))


def test_fid_equals_a_low_rank_re_derivation_and_torchmetrics_on_features_that_differ(backbones, tmp_path):
    from torchmetrics.image.fid import FrechetInceptionDistance

    from sdcallbacks.metrics.distribution.features import FeatureRows

    refs = folder_of(tmp_path / "refs", squares(6, size=48, seed=41, colours=("red", "green", "blue")))
    fid = METRICS["fid"](mc.FidConfig(references=refs, weights=str(backbones.inception)))
    images = squares(6, size=48, seed=42, colours=("yellow", "purple"))
    value = fid.score(images, jobs_for(*"abcdef"))["fid"]
    real = fid.net.embed(ImageFolder.read(refs).images)
    fake = fid.net.embed(images)
    assert float((fake - fake.mean(0)).std()) > 0.05  # the test Inception tells images apart
    assert value > 1.0  # far from 0: two different sets
    assert value == pytest.approx(frechet_distance(real.numpy(), fake.numpy()), rel=1e-4)
    reference = FrechetInceptionDistance(feature=FeatureRows(2048))  # and torchmetrics, the peer
    reference.update(real, real=True)
    reference.update(fake, real=False)
    assert value == pytest.approx(float(reference.compute()), rel=1e-6)
    # A set against itself: 0, never the -1e-7 that the square root's rounding can give.
    same = fid.score(ImageFolder.read(refs).images, jobs_for(*"abcdef"))["fid"]
    assert 0.0 <= same < 1e-3


def test_inception_score_equals_a_numpy_re_derivation_and_torchmetrics(backbones):
    import warnings

    from torchmetrics.image.inception import InceptionScore as TorchmetricsIS

    from sdcallbacks.metrics.distribution.features import on_features

    images = squares(8, size=48, seed=42, colours=("red", "green", "blue", "yellow", "purple"))
    inception = METRICS["inception_score"](mc.InceptionScoreConfig(weights=str(backbones.inception)))
    before = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one split: no std, and no NaN warning from torch
        scores = inception.score(images, jobs_for(*"abcdefgh"))
    assert torch.equal(before, torch.get_rng_state())  # a private generator: training's stream untouched
    logits = inception.net.embed(images)
    assert scores["inception_score"] == pytest.approx(inception_score(logits.numpy()), rel=1e-6)
    assert scores["inception_score"] > 1.5  # far from the 1.0 of identical or one-image splits
    assert scores["inception_score/std"] is None

    two = METRICS["inception_score"](mc.InceptionScoreConfig(weights=str(backbones.inception), splits=2))
    split_scores = two.score(images, jobs_for(*"abcdefgh"))
    reference = on_features(TorchmetricsIS, logits.shape[1], splits=2)
    reference.update(logits)
    torch.manual_seed(0)  # torchmetrics shuffles with the global generator; ours is private, seeded 0
    mean, std = reference.compute()
    assert split_scores["inception_score"] == pytest.approx(float(mean), rel=1e-6)
    assert split_scores["inception_score/std"] == pytest.approx(float(std), rel=1e-6)


class ConfidentClassifier(Backbone):
    """Stands in for the Inception logits: image i (red channel i) is classified as class i, surely."""

    key = "inception-v3:logits_unbiased:torch-fidelity"  # the key InceptionScore asks its pool for

    def load(self):
        pass

    def forward(self, images):
        classes = [int(np.asarray(im)[0, 0, 0]) for im in images]
        return 50.0 * torch.nn.functional.one_hot(torch.tensor(classes), 1008).double()


@pytest.mark.parametrize("n", [8, 10, 16])
def test_inception_score_of_n_distinct_confident_images_is_n_by_default(n, caplog):
    """Every split holding one image scores exactly 1 whatever the images: the old default (10 splits)
    made IS 1.0 on any validation of up to 10 images."""
    pool = BackbonePool()
    pool.get(ConfidentClassifier())
    images = [Image.new("RGB", (8, 8), (i, 0, 0)) for i in range(n)]
    jobs = jobs_for(*[f"p{i}" for i in range(n)])
    scores = METRICS["inception_score"](mc.InceptionScoreConfig(), pool=pool).score(images, jobs)
    assert scores["inception_score"] == pytest.approx(n, rel=1e-6)
    with caplog.at_level(logging.WARNING, logger="sdcallbacks"):
        one_each = METRICS["inception_score"](mc.InceptionScoreConfig(splits=n), pool=pool)
        assert one_each.score(images, jobs)["inception_score"] == pytest.approx(1.0)
    assert "fewer than 2 per split" in caplog.text


def test_set_metrics_give_a_value_a_delta_and_count_a_skip():
    values = set_values({"kid": 0.25, "kid/std": 0.01, "cmmd": None}, {"kid": 0.5, "kid/std": 0.02})
    assert values == {
        "val/kid": 0.25,
        "val/kid/delta": -0.25,
        "val/kid/std": 0.01,  # a spread: no delta of its own
        "val/cmmd/skipped": 1.0,
    }


# -- style loss, CCIP, anime aesthetic -------------------------------------------------------------


def test_style_loss_reproduces_ghostreview_including_the_inplace_relu(backbones, tmp_path):
    from torchvision import transforms
    from torchvision.models import vgg19

    refs = folder_of(tmp_path / "refs", squares(2, seed=51))
    metric = METRICS["style_loss"](
        mc.StyleLossConfig(references=refs, weights=str(backbones.vgg19), size=(64, 64))
    )
    images = squares(2, seed=52)
    scores = metric.score(images, jobs_for("a", "b"))["style_loss"]

    # GhostReview as written: in-place ReLUs, tensors recorded at indices 0, 5, 10, 19, 28.
    net = vgg19(weights=None).features[:29].eval()
    state = torch.load(backbones.vgg19, weights_only=True)
    net.load_state_dict(
        {k.removeprefix("features."): v for k, v in state.items() if int(k.split(".")[1]) < 29}
    )
    prep = transforms.Compose(
        [
            transforms.Resize((64, 64)),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )

    def grams(image):
        x, recorded = prep(image)[None], []
        with torch.no_grad():
            for i, layer in enumerate(net):
                x = layer(x)
                if i in (0, 5, 10, 19, 28):
                    recorded.append(x)  # the next in-place ReLU overwrites it (the catch)
        return [(f.flatten(2) @ f.flatten(2).transpose(1, 2))[0].double() for f in recorded]

    ref_grams = [grams(im) for im in ImageFolder.read(refs).images]
    for image, score in zip(images, scores):
        g = grams(image)
        losses = [sum(((a - b) ** 2).mean() for a, b in zip(g, r)) for r in ref_grams]
        assert score == pytest.approx(float(np.mean(losses)), rel=1e-4)


def test_ccip_same_character_and_difference(backbones, tmp_path):
    refs = squares(2, seed=61, colours=("red",))
    metric = METRICS["ccip"](
        mc.CcipConfig(references=folder_of(tmp_path / "refs", refs), model=str(backbones.ccip))
    )
    same, other = refs[0], Image.new("RGB", (64, 64), (0, 0, 255))
    scores = metric.score([same, other], jobs_for("a", "b"))
    assert scores["ccip"][0] < scores["ccip"][1]
    assert scores["ccip/same_rate"][0] >= 0.5 and scores["ccip/same_rate"][1] == 0.0
    assert metric.threshold == pytest.approx(0.17847511429108218)


def test_anime_aesthetic_preprocessing_fits_the_long_side_onto_a_black_canvas():
    from sdcallbacks.metrics.backbones.anime_aesthetic import preprocess_anime_aesthetic

    wide = Image.new("RGB", (100, 50), (255, 128, 0))
    out = preprocess_anime_aesthetic(wide, 64)
    assert out.shape == (3, 64, 64)
    assert np.all(out[:, :16] == 0) and np.all(out[:, 48:] == 0)  # h = int(64 * 50 / 100) = 32, top = 16
    assert np.allclose(out[:, 16:48], np.array([1.0, 128 / 255, 0.0])[:, None, None], atol=1e-6)
    tall = preprocess_anime_aesthetic(Image.new("RGBA", (30, 90), (0, 0, 0, 0)), 60)
    assert np.all(tall[:, :, 20:40] == 1.0) and np.all(tall[:, :, :20] == 0)  # transparent → white


def test_anime_aesthetic_scores_through_onnx(backbones):
    import onnx
    from onnx import numpy_helper

    metric = METRICS["aesthetic_anime"](mc.AestheticAnimeConfig(model=str(backbones.anime), size=64))
    images = squares(3)  # 64 px at size 64: no resize, the canvas is the image
    scores = metric.score(images, jobs_for("a", "b", "c"))["aesthetic_anime"]
    # Independently: the test graph is sigmoid(channel means of the 0..1 image @ w), w read from the file.
    graph = onnx.load(backbones.anime).graph  # the model.onnx file
    w = next(numpy_helper.to_array(t) for t in graph.initializer if t.name == "w").astype(np.float64)
    means = np.stack([np.asarray(im, dtype=np.float64).reshape(-1, 3).mean(axis=0) / 255 for im in images])
    expected = 1 / (1 + np.exp(-(means @ w)[:, 0]))
    assert scores == pytest.approx(expected.tolist(), abs=1e-5)


# -- bad input --------------------------------------------------------------------------------------


def odd_images():
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 128))
    grey = Image.new("L", (33, 65), 90)
    deep = Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16))
    return [
        rgba,
        grey,
        deep,
        Image.new("RGB", (1, 1), (9, 9, 9)),
        Image.new("RGB", (1600, 900), (200, 10, 10)),
    ]


def test_every_image_metric_takes_odd_modes_and_sizes(backbones, tmp_path):
    refs = folder_of(tmp_path / "refs", squares(2, seed=71))
    clip = clip_config(backbones)
    config = MetricsConfig(
        tag_accuracy={"model": str(backbones.tagger)},
        aesthetic_laion={"head": str(backbones.laion_head), "clip": clip},
        aesthetic_anime={"model": str(backbones.anime), "size": 64},
        clip_score={"clip": clip},
        clip_i={"references": refs, "clip": clip},
        identity={"references": refs, "weights": str(backbones.facenet)},
        ccip={"references": refs, "model": str(backbones.ccip)},
        style_loss={"references": refs, "weights": str(backbones.vgg19), "size": (32, 32)},
    )
    images = odd_images()
    jobs = jobs_for("red square", "a", "b", "c", "d")
    for metric in build_metrics(config.enabled()):
        if metric.name == "identity":  # square references have no face
            with pytest.raises(ImageFolderError):
                metric.score(images, jobs)
            continue
        scores = metric.score(images, jobs)
        assert all(len(v) == len(images) for v in scores.values()), metric.name


def full_suite(backbones, refs: Path, faces: Path, batch_size: int) -> MetricsConfig:
    clip = {"model": backbones.clip, "pretrained": None}
    sections = {
        "tag_accuracy": {"model": str(backbones.tagger)},
        "aesthetic_laion": {"head": str(backbones.laion_head), "clip": clip},
        "aesthetic_anime": {"model": str(backbones.anime), "size": 64},
        "clip_score": {"clip": clip},
        "clip_i": {"references": refs, "clip": clip},
        "dino": {"references": refs, "model": str(backbones.dino)},
        "identity": {"references": faces, "weights": str(backbones.facenet)},
        "ccip": {"references": refs, "model": str(backbones.ccip)},
        "style_loss": {"references": refs, "weights": str(backbones.vgg19), "size": (32, 32)},
        "diversity": {"trunk_weights": str(backbones.alexnet)},
        "diversity_clip": {"clip": clip},
        "kid": {"references": refs, "clip": clip, "subsets": 5},
        "cmmd": {"references": refs, "clip": clip},
    }
    return MetricsConfig(**{name: {**part, "batch_size": batch_size} for name, part in sections.items()})


def test_batch_size_never_changes_a_score(backbones, astronaut, tmp_path):
    """Every metric scores the same images alike one at a time or sixteen at a time."""
    refs = folder_of(tmp_path / "refs", squares(4, seed=81))
    faces = folder_of(tmp_path / "faces", [astronaut])
    images = [*squares(6, seed=82), astronaut, astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    jobs = jobs_for("red square", "green square", "blue square", "a face", num_images=2)
    by_size = {}
    for batch_size in (1, 16):
        suite = full_suite(backbones, refs, faces, batch_size)
        metrics = build_metrics(suite.enabled(), pool=BackbonePool())
        batch = ImageBatch.of(images, jobs)
        by_size[batch_size] = {m.name: m.score(batch) for m in metrics}
    assert len(by_size[1]) == 13
    for name, scores in by_size[1].items():
        for key, values in scores.items():
            other = by_size[16][name][key]
            if isinstance(values, list) and any(isinstance(v, dict) for v in values):  # details: exact
                assert values == other, key
                continue
            if isinstance(values, list):
                assert [v is None for v in values] == [v is None for v in other], key
                values = [v for v in values if v is not None]
                other = [v for v in other if v is not None]
            assert values == pytest.approx(other, rel=1e-4, abs=1e-5), key
    assert any(v is not None for v in by_size[1]["identity"]["identity"])  # the faces were scored


def test_reference_folders_empty_missing_or_corrupt(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageFolderError, match="holds no images"):
        ImageFolder.read(tmp_path / "empty")
    with pytest.raises(ImageFolderError, match="is not a folder"):
        ImageFolder.read(tmp_path / "nowhere")
    folder = folder_of(tmp_path / "mixed", squares(1))
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    with caplog.at_level(logging.WARNING, logger="sdcallbacks"):
        read = ImageFolder.read(folder)
    assert len(read.images) == 1 and list(read.skipped) == [folder / "broken.png"]
    assert "broken.png" in caplog.text
    (folder / "00.png").unlink()
    with pytest.raises(ImageFolderError, match="none of the 1 images"):
        ImageFolder.read(folder)


def test_missing_torchvision_trunks_offline_name_file_and_cache(tmp_path, monkeypatch):
    from sdcallbacks.metrics.backbones.lpips_net import LPIPSNet
    from sdcallbacks.metrics.backbones.vgg import VGGGram

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match=r"vgg19-dcbb9e9d\.pth"):
        VGGGram().load()
    with pytest.raises(WeightsNotFoundError, match=r"alexnet-owt-7be5be79\.pth"):
        LPIPSNet().load()
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        LPIPSNet(trunk_weights=str(tmp_path / "nope.pth")).load()


# -- aggregates and registry -----------------------------------------------------------------------


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = list(np.random.default_rng(0).normal(5, 1, 40))
    low, high = bootstrap_ci(values)
    assert (low, high) == bootstrap_ci(values)
    assert low < np.mean(values) < high and high - low < 1.0
    assert bootstrap_ci([2.0]) == (2.0, 2.0)


def test_good_rate_follows_the_key_direction():
    records = records_from({"style_loss": [1.0, 2.0, 3.0, 4.0]})
    values = aggregate(records, specs={"style_loss": KeySpec(False, good_threshold=2.0)})
    assert values["val/style_loss/good_rate"] == 0.5


def test_every_metric_section_has_a_registered_metric_and_vice_versa():
    sections = {
        n
        for n, f in MetricsConfig.model_fields.items()
        if n not in ("device", "cache_dir", "cache_references", "val_loss")
    }
    assert sections == set(METRICS)
    for name, cls in METRICS.items():
        assert cls.name == name and MetricsConfig.model_fields[name].annotation == (cls.config_class | None)


# -- sdcallbacks score -----------------------------------------------------------------------------


def test_score_cli_scores_a_folder_with_prompts_from_file_caption_and_png_text(backbones, tmp_path, capsys):
    import json

    from PIL import PngImagePlugin

    from sdcallbacks.cli import main

    folder = tmp_path / "exported"
    folder.mkdir()
    images = squares(4, seed=81)
    images[0].save(folder / "a.png")
    images[1].save(folder / "b.png")
    (folder / "b.txt").write_text("green square, white background", encoding="utf-8")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "blue square, white background\nNegative prompt: x\nSteps: 20, Seed: 1234")
    images[2].save(folder / "c.png", pnginfo=info)
    images[3].save(folder / "d.png")
    (folder / "broken.png").write_bytes(b"not an image")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"file": "a.png", "prompt": "red square, white background", "seed": 7}) + "\n"
    )
    config = tmp_path / "metrics.yaml"
    config.write_text(f"metrics:\n  tag_accuracy:\n    model: {backbones.tagger}\n", encoding="utf-8")
    out = tmp_path / "scores.jsonl"
    argv = ["score", str(folder), "--metrics", "tag_accuracy,aesthetic_anime", "--prompts", str(prompts)]
    assert main([*argv, "--config", str(config), "--out", str(out)]) == 2  # aesthetic_anime: no model offline
    config.write_text(
        f"metrics:\n  tag_accuracy:\n    model: {backbones.tagger}\n"
        f"  aesthetic_anime:\n    model: {backbones.anime}\n    size: 64\n",
        encoding="utf-8",
    )
    assert main([*argv, "--config", str(config), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_file = {Path(r["image_path"]).name: r for r in rows if r["type"] == "image"}
    assert by_file["a.png"]["seed"] == 7 and by_file["a.png"]["prompt"].startswith("red square")
    assert by_file["b.png"]["prompt"].startswith("green") and by_file["c.png"]["seed"] == 1234
    assert by_file["d.png"]["scores"]["tag_accuracy"] is None  # no prompt: skipped, not 0
    assert by_file["a.png"]["scores"]["tag_accuracy"] == 1.0
    aggregate_row = rows[-1]["values"]
    assert aggregate_row["score/skipped_files"] == 1.0 and aggregate_row["score/tag_accuracy/skipped"] == 1.0
    assert "score/aesthetic_anime/mean" in capsys.readouterr().out
    assert main(["score", str(folder), "--metrics", "no_such_metric"]) == 2


# -- transparency: each backbone as its own reference -------------------------------------------


def transparent_pair(tmp_path: Path) -> list[Image.Image]:
    """Two RGBA files that look the same (left half opaque, right half fully transparent) and differ only in
    the colours hidden under the transparent half; read as a folder is read."""
    from sdcallbacks.metrics.images import read_image

    rng = np.random.default_rng(5)
    visible = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)
    paths = []
    for name, hidden in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        rgba = np.zeros((64, 64, 4), dtype=np.uint8)
        rgba[:, :32, :3], rgba[:, :32, 3] = visible, 255
        rgba[:, 32:, :3], rgba[:, 32:, 3] = hidden, 0
        Image.fromarray(rgba, "RGBA").save(tmp_path / f"{name}.png")
        paths.append(tmp_path / f"{name}.png")
    images = [read_image(path) for path in paths]
    assert [im.mode for im in images] == ["RGBA", "RGBA"]  # reading keeps the alpha for the backbones
    return images


def as_arrays(features) -> list[np.ndarray]:
    parts = features if isinstance(features, tuple) else (features,)
    return [np.asarray(part, dtype=np.float64) for part in parts]


def test_each_backbone_treats_transparency_as_its_reference_does(backbones, tmp_path):
    """WD14 (SmilingWolf), CCIP (imgutils) and the anime aesthetic composite onto white: the hidden colours
    cannot matter. CLIP, LPIPS, VGG and Inception follow ``convert("RGB")`` (clip.load, the LAION
    predictor, lpips, GhostReview, torchmetrics): the hidden colours show, as they do in PIL."""
    from sdcallbacks.metrics.backbones.anime_aesthetic import AnimeAestheticNet
    from sdcallbacks.metrics.backbones.ccip import CCIPNet
    from sdcallbacks.metrics.backbones.inception import InceptionNet
    from sdcallbacks.metrics.backbones.lpips_net import LPIPSNet
    from sdcallbacks.metrics.backbones.vgg import VGGGram
    from sdcallbacks.metrics.backbones.wd14 import WD14Tagger

    images = transparent_pair(tmp_path)
    on_white = []
    for image in images:
        canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
        canvas.alpha_composite(image)
        on_white.append(canvas.convert("RGB"))
    converted = [image.convert("RGB") for image in images]
    composite = [
        WD14Tagger(str(backbones.tagger)),
        CCIPNet(str(backbones.ccip), "ccip-caformer-24-randaug-pruned"),
        AnimeAestheticNet(str(backbones.anime), size=64),
    ]
    dropped = [
        ClipBackbone(clip_config(backbones)),
        LPIPSNet(trunk_weights=str(backbones.alexnet)),
        VGGGram(str(backbones.vgg19), size=(32, 32)),
        InceptionNet("2048", str(backbones.inception)),
    ]
    for backbone in composite + dropped:
        red, blue = (as_arrays(backbone.embed([image])) for image in images)
        reference = on_white if backbone in composite else converted
        expected = [as_arrays(backbone.embed([image])) for image in reference]
        for got, want in zip((red, blue), expected):
            assert all(np.allclose(g, w, atol=1e-6) for g, w in zip(got, want)), backbone.key
        hidden_shows = not all(np.allclose(r, b, atol=1e-6) for r, b in zip(red, blue))
        assert hidden_shows == (backbone in dropped), backbone.key
