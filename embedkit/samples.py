"""Bundled sample datasets, exported as real folders (class subfolders = labels).

Everything here ships inside installed packages, so it works offline:
- scikit-learn's digits (8x8 greyscale), with the classic transfer split: digits 0-4 as the
  source task, digits 5-9 as the target task;
- animal-shape-mnist (10 animal classes x 1000 silhouettes, 28x28), read from its gzip-pickle
  files through a restricted unpickler that admits only NumPy arrays (its own loader imports
  TensorFlow and is never used);
- scikit-image's lfw_subset (100 faces, 100 non-faces, 25x25);
- further samples registered with `register` (the text side adds its own).
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import NotFoundError, UsageError
from .files import restricted_load

__all__ = ["ANIMAL_CLASSES", "animal_shape_arrays", "describe", "export", "load_numpy_pickle",
           "names", "PerClass", "register", "Sample", "samples_root", "write_images"]

#: Class order as the animal-shape-mnist package describes it (labels 0..9).
ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep",
                  "zebra"]


@dataclass(frozen=True)
class Sample:
    name: str
    modality: str
    description: str
    write: Callable[[Path, "PerClass"], int]  # (folder, which items to keep) -> items written


_SAMPLES: dict[str, Sample] = {}


def register(sample: Sample):
    _SAMPLES[sample.name] = sample


def names() -> list[str]:
    return sorted(_SAMPLES)


def describe() -> list[dict]:
    return [{"name": s.name, "modality": s.modality, "description": s.description}
            for s in (_SAMPLES[n] for n in names())]


def samples_root() -> Path:
    from .store import default_root

    return default_root() / "datasets"


class PerClass:
    """Which items of each class to keep, in the sample's own order: skip the first `skip`,
    then keep at most `limit` (so `skip=20` gives a test set disjoint from `limit=20`)."""

    def __init__(self, limit: int | None = None, skip: int = 0):
        self.limit, self.skip = limit, skip
        self._seen: dict[str, int] = {}

    def __call__(self, label: str) -> bool:
        seen = self._seen.get(label, 0)
        self._seen[label] = seen + 1
        return seen >= self.skip and (self.limit is None or seen < self.skip + self.limit)


def export(name: str, folder: str | os.PathLike | None = None, per_class: int | None = None,
           overwrite: bool = False, skip: int = 0) -> Path:
    """Write a bundled sample as a folder; without `folder`, into the cache (once).
    `per_class` keeps at most N items of each class, after skipping the first `skip`."""
    if name not in _SAMPLES:
        import difflib

        close = difflib.get_close_matches(name, names(), n=3)
        raise NotFoundError(f"no bundled dataset '{name}'"
                            + (f"; did you mean {', '.join(close)}?" if close else "")
                            + f" Available: {', '.join(names())}")
    if per_class is not None and per_class < 1:
        raise UsageError(f"--per-class must be at least 1, not {per_class}")
    if skip < 0:
        raise UsageError(f"--skip must be 0 or more, not {skip}")
    target = Path(folder) if folder else samples_root() / (
        name + (f"-{per_class}" if per_class is not None else "") + (f"-skip{skip}" if skip else ""))
    done = target / ".embedkit-sample"
    if done.exists() and not overwrite:
        return target
    if target.exists() and any(target.iterdir()) and not done.exists() and folder:
        raise UsageError(f"{target}: folder exists and is not empty; choose a new folder")
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _SAMPLES[name].write(tmp, PerClass(per_class, skip))
    (tmp / ".embedkit-sample").write_text(name + "\n")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def write_images(folder: Path, images: np.ndarray, labels, keep: PerClass) -> int:
    """uint8 [n, h, w] images into folder/<label>/<index>.png, those that `keep` admits."""
    from PIL import Image

    written = 0
    for i, (img, label) in enumerate(zip(images, labels)):
        label = str(label)
        if not keep(label):
            continue
        (folder / label).mkdir(exist_ok=True)
        Image.fromarray(img).save(folder / label / f"{i:05d}.png")
        written += 1
    return written


def _digits(classes: range):
    def write(folder: Path, keep):
        from sklearn.datasets import load_digits

        d = load_digits()
        mask = np.isin(d.target, list(classes))
        images = (d.images[mask] * (255.0 / 16.0)).round().astype(np.uint8)
        return write_images(folder, images, d.target[mask], keep)

    return write


def load_numpy_pickle(path: str | os.PathLike) -> np.ndarray:
    """A gzip-pickled NumPy array, through the restricted unpickler (NumPy types only: a
    bundled pickle cannot run code)."""
    with gzip.open(path, "rb") as f:
        return restricted_load(io.BytesIO(f.read()),
                               what="only NumPy arrays are allowed in bundled data")


def animal_shape_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [10000, 28, 28], labels int [10000]) from the installed package's files."""
    import importlib.util

    spec = importlib.util.find_spec("animal_shape_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError("the animal-shape sample needs: pip install animal-shape-mnist")
    root = Path(list(spec.submodule_search_locations)[0]) / "data" / "Animal Shape"
    return (load_numpy_pickle(root / "animal_data_version_3.gz"),
            load_numpy_pickle(root / "animal_label_version_3.gz"))


def _animal_shape(folder: Path, keep):
    images, labels = animal_shape_arrays()
    return write_images(folder, images, [ANIMAL_CLASSES[int(y)] for y in labels], keep)


def _lfw_subset(folder: Path, keep):
    from skimage.data import lfw_subset

    images = (lfw_subset() * 255).round().astype(np.uint8)
    labels = ["face"] * 100 + ["non-face"] * 100
    return write_images(folder, images, labels, keep)


def _pang_lee(folder: Path, keep):
    """gensim's pang_lee_polarity.cor: 200 movie-review sentences, `__label__pos|neg text`."""
    import csv

    from gensim.test.utils import datapath

    written = 0
    with open(datapath("pang_lee_polarity.cor"), encoding="cp1252", errors="replace") as src, \
            open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as dst:
        out = csv.writer(dst)
        out.writerow(["id", "text", "label"])
        for lineno, line in enumerate(src, 1):
            tag, _, text = line.strip().partition(" ")
            label = tag.removeprefix("__label__")
            if keep(label):
                out.writerow([lineno, text, label])
                written += 1
    return written


register(Sample("pang-lee-polarity", "text",
                "gensim's 200 movie-review sentences labelled pos / neg (manifest.csv)", _pang_lee))
register(Sample("digits", "image", "scikit-learn digits 0-9, 1,797 8x8 images", _digits(range(10))))
register(Sample("digits-source", "image", "digits 0-4: the source task of the transfer example",
                _digits(range(5))))
register(Sample("digits-target", "image", "digits 5-9: the target task of the transfer example",
                _digits(range(5, 10))))
register(Sample("animal-shape", "image",
                "animal-shape-mnist: 10 animals x 1,000 silhouettes, 28x28", _animal_shape))
register(Sample("lfw-subset", "image", "scikit-image lfw_subset: 100 faces, 100 non-faces, 25x25",
                _lfw_subset))
