"""Augmentation for small image sets: more views of each image, embedded and cached.

"This is still a cat": a flipped, cropped, colour-shifted image keeps its label, and its embedding
is one more training example (or, averaged with the original's, a steadier test-time embedding).
Which transformations are allowed says which invariances the model should have (digits must not
be flipped), so the recipe is explicit: ``"hflip,crop=0.8,jitter=0.2,rotate=10"``.

`AugmentedBackbone(base, spec, view, seed)` is an ordinary Backbone: its `preprocess` applies a
deterministic augmentation (a function of the image's pixels, the seed and the view index) before
the wrapped backbone's own preprocessing, and its `fingerprint()` folds in the recipe, view and
seed.  So `embedkit.extract(dataset, AugmentedBackbone(...))` caches each view in the same store,
and a rerun reads it back instead of recomputing it.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass, fields

import numpy as np

from .backbone import Backbone, WrappingBackbone, fingerprint_of
from .embeddings import EmbeddingSet
from .errors import UsageError

__all__ = ["DEFAULT_RECIPE", "align", "AugmentedBackbone", "AugmentSpec", "average_views",
           "extract_views"]

DEFAULT_RECIPE = "hflip,crop=0.85,jitter=0.2"


@dataclass(frozen=True)
class AugmentSpec:
    """Random transformations, each drawn per image and view.

    hflip / vflip: mirror with probability 1/2; crop: keep a random square-ish window of at least
    this fraction of the area, resized back; jitter: brightness, contrast and saturation factors
    drawn from [1 - jitter, 1 + jitter]; rotate: an angle drawn from [-rotate, rotate] degrees.
    """

    hflip: bool = False
    vflip: bool = False
    crop: float = 1.0
    jitter: float = 0.0
    rotate: float = 0.0

    @classmethod
    def parse(cls, recipe: str | "AugmentSpec" | None) -> "AugmentSpec":
        """``"hflip,crop=0.8,jitter=0.2"`` -> AugmentSpec (None = the default recipe)."""
        if isinstance(recipe, AugmentSpec):
            return recipe
        known = {f.name: f.type for f in fields(cls)}
        values: dict = {}
        for part in filter(None, (p.strip() for p in (recipe or DEFAULT_RECIPE).split(","))):
            name, _, value = part.partition("=")
            if name not in known:
                raise UsageError(f"unknown augmentation '{name}' in '{recipe}': use "
                                 f"{', '.join(known)} (e.g. '{DEFAULT_RECIPE}')")
            if name in ("hflip", "vflip"):
                values[name] = value.lower() not in ("0", "false", "no")
                continue
            try:
                values[name] = float(value)
            except ValueError:
                raise UsageError(f"augmentation '{name}' needs a number, e.g. {name}=0.2; "
                                 f"got '{part}'") from None
        spec = cls(**values)
        if not 0.05 <= spec.crop <= 1.0:
            raise UsageError(f"crop={spec.crop}: the kept area fraction must be in [0.05, 1]")
        if not 0.0 <= spec.jitter < 1.0:
            raise UsageError(f"jitter={spec.jitter}: must be in [0, 1)")
        if spec == cls():
            raise UsageError(f"augmentation recipe '{recipe}' changes nothing; "
                             f"e.g. '{DEFAULT_RECIPE}'")
        return spec

    def __str__(self):
        parts = [n for n in ("hflip", "vflip") if getattr(self, n)]
        parts += [f"{n}={getattr(self, n):g}" for n, off in (("crop", 1.0), ("jitter", 0.0),
                                                              ("rotate", 0.0))
                  if getattr(self, n) != off]
        return ",".join(parts)

    def apply(self, image, rng: np.random.Generator):
        """A transformed copy of a PIL RGB image (same size)."""
        from PIL import Image, ImageEnhance, ImageOps

        w, h = image.size
        if self.hflip and rng.random() < 0.5:
            image = ImageOps.mirror(image)
        if self.vflip and rng.random() < 0.5:
            image = ImageOps.flip(image)
        if self.rotate:
            border = np.concatenate([np.asarray(image)[[0, -1]].reshape(-1, 3),
                                     np.asarray(image)[:, [0, -1]].reshape(-1, 3)])
            fill = tuple(int(v) for v in np.median(border, axis=0))
            image = image.rotate(rng.uniform(-self.rotate, self.rotate),
                                 resample=Image.BILINEAR, fillcolor=fill)
        if self.crop < 1.0:
            side = np.sqrt(rng.uniform(self.crop, 1.0))
            cw, ch = max(1, round(w * side)), max(1, round(h * side))
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            image = image.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BILINEAR)
        if self.jitter:
            for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                image = enhance(image).enhance(rng.uniform(1 - self.jitter, 1 + self.jitter))
        return image


class AugmentedBackbone(WrappingBackbone):
    """View `view` (1, 2, ...) of every image under `spec`, embedded by `base`."""

    def __init__(self, base: Backbone, spec: AugmentSpec | str | None = None, view: int = 1,
                 seed: int = 0):
        if base.modality != "image":
            raise UsageError(f"augmentation applies to images; {base.name} embeds "
                             f"{base.modality}s")
        if view < 1:
            raise UsageError(f"augmented views are numbered from 1 (0 is the original), not {view}")
        self.wrapped = base
        self.spec = AugmentSpec.parse(spec)
        self.view = int(view)
        self.seed = int(seed)
        self.name = f"{base.name}+augment"
        self.modality = base.modality
        self.family = base.family

    # the wrapped backbone runs the model: its device and precision, its item statistics
    precision = property(lambda self: self.wrapped.precision)
    device = property(lambda self: self.wrapped.device)
    uses_device = property(lambda self: self.wrapped.uses_device)

    def accept(self, sample):
        return self.wrapped.accept(sample)

    def report(self):
        return self.wrapped.report()

    def fingerprint(self) -> str:
        return fingerprint_of(base=self.wrapped.fingerprint(), augment=asdict(self.spec),
                              view=self.view, seed=self.seed)

    def augmented_image(self, source):
        """The deterministic augmented image of `source` (an Item or a path): the random draws
        depend on the pixels (the same content as the cache key), the seed and the view, never
        on the file name."""
        from .inputs import load_image

        image = load_image(source)
        digest = hashlib.sha256(image.tobytes() + f"|{image.size}|{self.seed}|{self.view}"
                                .encode()).digest()
        return self.spec.apply(image, np.random.default_rng(int.from_bytes(digest[:8], "little")))

    def preprocess(self, item):
        image = self.augmented_image(item)
        if self.wrapped.preprocessing is not None:  # the weights' preprocessing of a PIL image
            return self.wrapped.preprocessing(image)
        from .inputs import Item  # any other image backbone reads the augmented image's bytes

        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return self.wrapped.preprocess(Item(item.id, data=buffer.getvalue(), labels=item.labels))

    def collate(self, samples):
        return self.wrapped.collate(samples)

    def embed(self, batch) -> np.ndarray:
        return self.wrapped.embed(batch)

    def to(self, device: str = "cpu", precision: str = "fp32") -> "AugmentedBackbone":
        self.wrapped.to(device, precision)
        return self


def extract_views(dataset, backbone: Backbone, views: int, spec=None, seed: int = 0,
                  **extract_options) -> list[EmbeddingSet]:
    """Embeddings of augmented views 1..views of `dataset`, each through the cache."""
    from .extract import extract

    if views < 1:
        raise UsageError(f"--augment needs at least 1 view, not {views}")
    return [extract(dataset, AugmentedBackbone(backbone, spec, view, seed), **extract_options)
            for view in range(1, views + 1)]


def align(base: EmbeddingSet, views: list[EmbeddingSet]) -> list[EmbeddingSet]:
    """Each view restricted and ordered to the ids of `base` (an item skipped in a view is an
    error: views are of the same files)."""
    out = []
    for view in views:
        index = {i: n for n, i in enumerate(view.ids)}
        missing = [i for i in base.ids if i not in index]
        if missing:
            raise UsageError(f"augmented view has no embedding for {missing[0]} "
                             f"({len(missing)} missing)")
        rows = view.subset([index[i] for i in base.ids])
        rows.label_columns = dict(base.label_columns)
        out.append(rows)
    return out


def average_views(base: EmbeddingSet, views: list[EmbeddingSet], spec=None,
                  seed: int = 0) -> EmbeddingSet:
    """Test-time averaging: the mean of the original embedding and its augmented views, with a
    fingerprint of its own (base fingerprint + recipe + number of views + seed)."""
    spec = AugmentSpec.parse(spec)
    views = align(base, views)
    mean = np.mean([base.vectors, *(v.vectors for v in views)], axis=0, dtype=np.float64)
    meta = dict(base.meta)
    meta["augment"] = {"mode": "average", "views": len(views), "recipe": str(spec), "seed": seed,
                       "base_fingerprint": base.meta.get("fingerprint")}
    meta["fingerprint"] = fingerprint_of(base=base.meta.get("fingerprint"),
                                         augment=asdict(spec), views=len(views), seed=seed,
                                         mode="average")
    return EmbeddingSet(list(base.ids), mean.astype(np.float32), dict(base.label_columns), meta)
