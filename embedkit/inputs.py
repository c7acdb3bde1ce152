"""Datasets: what to embed, as items with stable ids, optional labels, and a content hash.

Image datasets: a folder with class subfolders (labels) or a flat folder; a CSV / JSONL manifest
with a `path` column (relative to the manifest) and optional label columns.
Text datasets: `.txt` (one item per line), CSV / JSONL with a `text` column and optional labels.
A dataset spec may also be a bundled sample name (see `embedkit datasets list`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadInputError, NotFoundError, UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TEXT_SUFFIXES = {".txt"}
MANIFEST_SUFFIXES = {".csv", ".jsonl"}
#: Decompression-bomb guard: images with more pixels than this are refused.
MAX_PIXELS = 64_000_000
PATH_COLUMNS = ("path", "file", "filename", "image")
TEXT_COLUMNS = ("text", "sentence", "document")


@dataclass
class Item:
    id: str
    path: str | None = None
    text: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # why the item cannot be used (a manifest row without data)

    def content_bytes(self) -> bytes:
        if self.text is not None:
            return normalise_text(self.text).encode("utf-8")
        with open(self.path, "rb") as f:
            return f.read()


@dataclass
class Dataset:
    root: str
    modality: str
    items: list[Item]
    label_names: list[str] = field(default_factory=list)  # label columns, primary first

    def __len__(self):
        return len(self.items)


def normalise_text(text: str) -> str:
    """The text identity used for caching: NFC, whitespace collapsed, stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def text_sha256(text: str) -> str:
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


def load_image(path: str):
    """Decode one image to an RGB PIL image, honouring EXIF orientation.

    Handles 16-bit greyscale PNG/TIFF (rescaled, not clipped), palette and alpha images
    (composited on white), animated GIF/WebP (first frame), and refuses decompression bombs.
    Raises BadInputError naming the file.
    """
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise Image.DecompressionBombError("too many pixels")
                im.seek(0)
                im = ImageOps.exif_transpose(im)
                im.load()
                if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    arr = np.asarray(im, dtype=np.float64)
                    top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
                    arr = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
                    im = Image.fromarray(arr, "L")
                if im.mode in ("P", "PA"):
                    im = im.convert("RGBA")
                if im.mode in ("RGBA", "LA"):
                    im = im.convert("RGBA")
                    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(bg, im)
                return im.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInputError(f"{path}: image is larger than {MAX_PIXELS:,} pixels "
                            "(decompression-bomb guard); downscale it first") from None
    except UnidentifiedImageError:
        raise BadInputError(f"{path}: not a readable image (unknown format or corrupt)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(f"{path}: cannot decode image ({exc}); the file may be truncated "
                            "or corrupt") from None


def _read_manifest(path: Path) -> list[dict]:
    try:
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        rows = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise BadInputError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
                    if not isinstance(row, dict):
                        raise BadInputError(f"{path}:{lineno}: each line must be a JSON object "
                                            '(JSON Lines), e.g. {"path": "a.jpg", "label": "cat"}')
                    rows.append(row)
        return rows
    except UnicodeDecodeError:
        raise BadInputError(f"{path}: not UTF-8 text") from None


def _from_manifest(path: Path, label: str | None) -> Dataset:
    rows = _read_manifest(path)
    if not rows:
        raise BadInputError(f"{path}: the manifest has no rows")
    cols = list(rows[0].keys())
    path_col = next((c for c in PATH_COLUMNS if c in cols), None)
    text_col = next((c for c in TEXT_COLUMNS if c in cols), None)
    if path_col is None and text_col is None:
        raise UsageError(f"{path}: a manifest needs a '{PATH_COLUMNS[0]}' column (images) or a "
                         f"'{TEXT_COLUMNS[0]}' column (texts); found {', '.join(cols)}")
    data_col = path_col or text_col
    other = [c for c in cols if c not in (data_col, "id")]
    label_names = _order_labels(other, label, path)
    items = []
    for i, row in enumerate(rows):
        labels = {c: str(row[c]) for c in label_names if row.get(c) not in (None, "")}
        value = row.get(data_col)
        if value in (None, ""):  # reported and skipped by the extractor, never "None"
            items.append(Item(str(row.get("id") or i + 1), labels=labels,
                              error=f"{path}: row {i + 1} has no '{data_col}' value"))
        elif path_col:
            rel = str(value)
            full = rel if os.path.isabs(rel) else str(path.parent / rel)
            items.append(Item(str(row.get("id") or rel), path=full, labels=labels))
        else:
            items.append(Item(str(row.get("id") or i), text=str(value), labels=labels))
    return Dataset(str(path.parent), "image" if path_col else "text", items, label_names)


def _order_labels(columns: list[str], label: str | None, where) -> list[str]:
    if label is None:
        return sorted(columns, key=lambda c: c != "label")
    if label not in columns:
        raise UsageError(f"{where}: no label column '{label}'; columns are {', '.join(columns)}")
    return [label] + [c for c in columns if c != label]


MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")


def _from_folder(root: Path, label: str | None = None) -> Dataset:
    for name in MANIFEST_NAMES:  # a folder that carries its own manifest is that manifest
        if (root / name).is_file():
            return _from_manifest(root / name, label)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    texts = [p for p in files if p.suffix.lower() in TEXT_SUFFIXES]
    if not images and not texts:
        raise BadInputError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) or .txt "
                            "files found; point at a folder of images or a manifest")
    chosen, modality = (images, "image") if len(images) >= len(texts) else (texts, "text")
    labelled = all(len(p.relative_to(root).parts) >= 2 for p in chosen)
    items = []
    for p in chosen:
        rel = p.relative_to(root).as_posix()
        labels = {"label": p.relative_to(root).parts[0]} if labelled else {}
        if modality == "image":
            items.append(Item(rel, path=str(p), labels=labels))
        else:
            items.append(Item(rel, text=p.read_text(encoding="utf-8", errors="replace"),
                              labels=labels))
    return Dataset(str(root), modality, items, ["label"] if labelled else [])


def _from_text_lines(path: Path) -> Dataset:
    items = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                items.append(Item(f"{lineno}", text=line.rstrip("\n")))
    if not items:
        raise BadInputError(f"{path}: the file has no non-empty lines")
    return Dataset(str(path.parent), "text", items)


def open_dataset(spec, label: str | None = None) -> Dataset:
    """A folder, manifest, .txt file, image file, list of paths/texts, or a bundled sample name."""
    if isinstance(spec, Dataset):
        return spec
    if isinstance(spec, (list, tuple)):
        return from_list(spec)
    path = Path(os.path.expanduser(str(spec)))
    if path.is_dir():
        ds = _from_folder(path, label)
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix in MANIFEST_SUFFIXES:
            return _from_manifest(path, label)
        if suffix in TEXT_SUFFIXES:
            return _from_text_lines(path)
        if suffix in IMAGE_SUFFIXES:
            return Dataset(str(path.parent), "image", [Item(path.name, path=str(path))])
        raise UsageError(f"{path}: not a dataset; give a folder, a .csv/.jsonl manifest, a .txt "
                         "file or an image")
    else:
        from . import samples

        if str(spec) in samples.names():
            return open_dataset(samples.export(str(spec)), label)
        raise NotFoundError(f"{spec}: no such file, folder or bundled dataset "
                            "(see: embedkit datasets list)")
    if label is not None and ds.label_names[:1] != [label]:
        raise UsageError(f"{spec}: folder datasets have one label column, 'label'")
    return ds


def from_list(values) -> Dataset:
    """Paths of existing files become image items; anything else is a text item."""
    values = [str(v) for v in values]
    if values and all(os.path.isfile(v) for v in values):
        return Dataset(os.getcwd(), "image", [Item(v, path=os.path.abspath(v)) for v in values])
    return Dataset(os.getcwd(), "text", [Item(str(i), text=v) for i, v in enumerate(values)])
