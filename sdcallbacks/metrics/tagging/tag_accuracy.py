"""``tag_accuracy``: does the image show the booru tags its prompt asks for?

Per image, with P the prompt's in-vocabulary general/character tags and T the tags the WD14 tagger
predicts above threshold (strict ``>``; ratings excluded):

* ``tag_accuracy`` = |P ∩ T| / |P| (recall of the prompted tags);
* ``tag_accuracy/precision`` = |P ∩ T| / |T| (predicted but unprompted tags count as errors);
* ``tag_accuracy/f1`` = harmonic mean of the two (0 when both are 0);
* ``tag_accuracy/oov_rate`` = share of the prompt's tags outside the tagger's vocabulary (trigger
  words, ``masterpiece``): they leave the denominator.

An image whose prompt has no in-vocabulary tag is skipped (``None``), not scored 0.
Character tags use ``character_threshold``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from sdcallbacks.config.metrics import TagAccuracyConfig
from sdcallbacks.metrics.backbones.wd14 import WD14Tagger, tags_above
from sdcallbacks.metrics.base import ImageBatch, ImageMetric, Scores
from sdcallbacks.metrics.registry import register_metric
from sdcallbacks.metrics.tagging.tags import prompt_tags


@register_metric
class TagAccuracy(ImageMetric):
    name = "tag_accuracy"
    higher_is_better = True
    config_class = TagAccuracyConfig
    uses_prompt = True
    extra_keys: ClassVar[dict[str, bool]] = {"precision": True, "f1": True, "oov_rate": False}
    # Per image: the prompt's in-vocabulary tags in prompt order and which the tagger found (accuracy by
    # tag position, in the report).
    detail_keys: ClassVar[tuple[str, ...]] = ("tag_accuracy/tags",)
    config: TagAccuracyConfig

    def load(self) -> None:
        self.tagger = self.pool.get(WD14Tagger(self.config.model, self.device, self.config.batch_size))
        self.tagger.ensure_loaded()  # the vocabulary is read with the model

    def predicted_tags(self, probabilities: np.ndarray) -> list[set[str]]:
        """Per image, the general and character tags above their threshold (strict ``>``)."""
        config = self.config
        return tags_above(probabilities, self.tagger.vocabulary, config.threshold, config.character_threshold)

    def compute(self, batch: ImageBatch) -> Scores:
        predicted = self.predicted_tags(batch.features.get(self.tagger).numpy())
        index = self.tagger.vocabulary.index
        scores: Scores = {key: [] for key in (*self.output_keys(), *self.detail_keys)}
        for job, tags in zip(batch.jobs, predicted):
            asked = prompt_tags(job.prompt.prompt)
            known = [t for t in asked if t in index]
            scores["tag_accuracy/oov_rate"].append((len(asked) - len(known)) / len(asked) if asked else None)
            scores["tag_accuracy/tags"].append({"tags": known, "found": [t in tags for t in known]})
            if not known:
                for key in ("tag_accuracy", "tag_accuracy/precision", "tag_accuracy/f1"):
                    scores[key].append(None)
                continue
            hits = len(set(known) & tags)
            recall = hits / len(known)
            precision = hits / len(tags) if tags else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            scores["tag_accuracy"].append(recall)
            scores["tag_accuracy/precision"].append(precision)
            scores["tag_accuracy/f1"].append(f1)
        return scores
