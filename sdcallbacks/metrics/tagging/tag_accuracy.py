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

from collections.abc import Sequence
from typing import ClassVar

from PIL import Image

from sdcallbacks.config.schema import TagAccuracyConfig
from sdcallbacks.metrics.base import Metric, Scores
from sdcallbacks.metrics.registry import register_metric
from sdcallbacks.metrics.tagging.tags import prompt_tags
from sdcallbacks.metrics.tagging.wd14 import CHARACTER, GENERAL, WD14Tagger
from sdcallbacks.prompts.library import ImageJob


@register_metric
class TagAccuracy(Metric):
    name = "tag_accuracy"
    higher_is_better = True
    config_class = TagAccuracyConfig
    extra_keys: ClassVar[dict[str, bool]] = {"precision": True, "f1": True, "oov_rate": False}
    config: TagAccuracyConfig

    def load(self) -> None:
        self.tagger = WD14Tagger(self.config.model, device=self.device, batch_size=self.config.batch_size)

    def predicted_tags(self, probabilities) -> list[set[str]]:
        vocab = self.tagger.vocabulary
        out = []
        for row in probabilities:
            tags = set()
            for name, column in vocab.index.items():
                category = vocab.categories[column]
                threshold = (
                    self.config.character_threshold if category == CHARACTER else self.config.threshold
                )
                if category in (GENERAL, CHARACTER) and row[column] > threshold:
                    tags.add(name)
            out.append(tags)
        return out

    def compute(self, images: Sequence[Image.Image], jobs: Sequence[ImageJob]) -> Scores:
        predicted = self.predicted_tags(self.tagger.predict(list(images)))
        index = self.tagger.vocabulary.index
        scores: Scores = {key: [] for key in self.output_keys()}
        for job, tags in zip(jobs, predicted):
            asked = prompt_tags(job.prompt.prompt)
            known = [t for t in asked if t in index]
            scores["tag_accuracy/oov_rate"].append((len(asked) - len(known)) / len(asked) if asked else None)
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
