"""Zero-shot classification with an image-text model (CLIP): no training images at all.

Radford et al. 2021 ("Learning Transferable Visual Models From Natural Language Supervision",
sec. 3.1.2): each class name is put into a prompt ("a photo of a {}"), the prompts are embedded
by the text tower, the images by the image tower, and each image takes the class whose prompt is
nearest by cosine.  Both sides go through `extract`, so the cache serves repeated runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import UsageError

__all__ = ["DEFAULT_TEMPLATE", "ZeroShotResult", "zero_shot"]

DEFAULT_TEMPLATE = "a photo of a {}"


@dataclass
class ZeroShotResult:
    """Per item: its predicted label and the cosine to every class prompt ([n, classes]);
    accuracy overall and per true class when the dataset has labels (None otherwise)."""

    ids: list[str]
    labels: list[str]
    predictions: np.ndarray
    scores: np.ndarray
    truth: np.ndarray | None = None
    accuracy: float | None = None
    per_class: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        items = [{"id": i, "prediction": str(p), "cosine": round(float(s.max()), 4),
                  **({"label": str(t)} if self.truth is not None else {})}
                 for i, p, s, t in zip(self.ids, self.predictions, self.scores,
                                       self.truth if self.truth is not None
                                       else [None] * len(self.ids))]
        return {"labels": self.labels, "accuracy": self.accuracy, "per_class": self.per_class,
                "items": items}


def zero_shot(dataset, model: str, labels, template: str = DEFAULT_TEMPLATE,
              weights: str | None = None, **extract_options) -> ZeroShotResult:
    """Classify the images of `dataset` among `labels` by their cosine to the class prompts.

    Args:
        dataset: anything `extract` takes that holds images (a folder with class subfolders
            gives the accuracy).
        model: an image-text model, e.g. "openclip/ViT-B-32@laion2b_s34b_b79k".
        labels: the class names (a list, or one comma-separated string).
        template: the prompt each class name fills ("{}" marks the place).
        weights, extract_options: passed to both `extract` calls (cache, device, ...).
    """
    from .extract import extract

    if isinstance(labels, str):
        labels = labels.split(",")
    labels = [str(x).strip() for x in labels if str(x).strip()]
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise UsageError(f"zero-shot needs two or more distinct labels, got {labels}")
    if template.count("{}") != 1:
        raise UsageError(f"--template '{template}' needs exactly one {{}} where the label goes")
    images = extract(dataset, model, weights=weights, **extract_options)
    if images.meta["modality"] != "image":
        raise UsageError("zero-shot classifies images; the dataset holds texts")
    prompts = extract([template.format(x) for x in labels], model, weights=weights,
                      **{**extract_options, "strict": True})
    scores = _unit(images.vectors) @ _unit(prompts.vectors).T
    predictions = np.asarray(labels, dtype=object)[np.argmax(scores, axis=1)]
    result = ZeroShotResult(list(images.ids), labels, predictions, scores.astype(np.float32))
    if images.labels is not None:
        truth = np.asarray([str(t) for t in images.labels], dtype=object)
        result.truth = truth
        result.accuracy = float(np.mean(predictions == truth))
        result.per_class = {str(c): float(np.mean(predictions[truth == c] == c))
                            for c in sorted(set(truth))}
    return result


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)
