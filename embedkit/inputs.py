"""Datasets: what to embed, as items with stable ids, optional labels, and a content hash.

Image datasets: a folder with class subfolders (labels) or a flat folder; a CSV / JSONL manifest
with a `path` column (relative to the manifest) and optional label columns.
Text datasets: `.txt` (one item per line), CSV / JSONL with a `text` column and optional labels.
A dataset spec may also be a bundled sample name (see `embedkit datasets list`), or values in
memory (`from_list`): paths, texts, or images (PIL, NumPy HWC / HW uint8, torch CHW), as a list,
a pandas Series or one-column DataFrame, or a Hugging Face `datasets` column.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import re
import sys
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInputError, NotFoundError, UsageError
from .files import display_name, first_repeat, walk_files

__all__ = ["IMAGE_SUFFIXES", "MANIFEST_NAMES", "MANIFEST_SUFFIXES", "MAX_PIXELS", "PATH_COLUMNS",
           "TEXT_COLUMNS", "TEXT_SUFFIXES", "Dataset", "from_list", "in_memory_image",
           "is_pil_image", "Item", "load_image", "load_text_or_file_item", "normalise_text",
           "open_dataset", "pixels_sha256", "read_text", "text_sha256"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TEXT_SUFFIXES = {".txt"}
MANIFEST_SUFFIXES = {".csv", ".jsonl"}
#: Decompression-bomb guard: images with more pixels than this are refused.
MAX_PIXELS = 64_000_000
PATH_COLUMNS = ("path", "file", "filename", "image")
TEXT_COLUMNS = ("text", "sentence", "document")


@dataclass(slots=True)  # a folder of a million files holds a million of these
class Item:
    """One thing to embed.  `id` is stable and unique within its dataset: the path relative to
    the dataset root for files, the `id` column of a manifest where it has one, else the line
    number in the file (as an editor shows it), or the position in an in-memory list."""

    id: str
    path: str | None = None  # a file to read
    text: str | None = None
    data: bytes | None = None  # in-memory file content (an augmented view, a read-once buffer)
    image: Any = None  # an in-memory image, already decoded: an RGB PIL image (in_memory_image)
    labels: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # why the item cannot be used (reported and skipped)

    @property
    def name(self) -> str:
        """What messages call the item: its file (printable), else its id."""
        return display_name(self.path) if self.path else self.id


@dataclass
class Dataset:
    root: str
    modality: str
    items: Sequence[Item]  # a list, or streamed (TextLines, FolderItems)
    label_names: list[str] = field(default_factory=list)  # label columns, primary first
    notes: list[str] = field(default_factory=list)  # reading notes (e.g. invalid UTF-8 bytes)
    name: str = ""  # what the user gave (a path as typed, a bundled name): messages name it

    def __len__(self):
        return len(self.items)

    @property
    def shown(self) -> str:
        """The dataset as messages name it: what the user gave, else its root folder."""
        return self.name or self.root


def normalise_text(text: str) -> str:
    """The text identity used for caching: NFC, whitespace collapsed, stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def text_sha256(text: str) -> str:
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


def pixels_sha256(image) -> str:
    """The content key of an in-memory image: its decoded RGB pixels with their mode and shape
    (the same pixels in another container, PIL or NumPy or torch, give the same key)."""
    digest = hashlib.sha256(b"rgb8|%dx%d|" % (image.height, image.width))
    digest.update(image.tobytes())
    return digest.hexdigest()


def _is_empty(source) -> bool:
    """Whether an image source (a path or a file object) holds no bytes at all."""
    try:
        if isinstance(source, (str, os.PathLike)):
            return os.path.getsize(source) == 0
        return source.seek(0, io.SEEK_END) == 0
    except (OSError, AttributeError, ValueError):
        return False


def load_image(source, name: str | None = None):
    """Decode one image (a path, an Item, bytes or a binary file object) to an RGB PIL image,
    honouring EXIF orientation.  An Item holding an in-memory image gives that image.

    Handles 16-bit greyscale PNG/TIFF (rescaled, not clipped), palette and alpha images
    (composited on white), animated GIF/WebP (first frame), and refuses decompression bombs.
    Raises BadInputError naming the file (`name`, else the path).
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Item):
        if source.image is not None:
            return source.image
        name = name or source.name
        source = source.data if source.data is not None else source.path
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    path = name or (display_name(str(source)) if isinstance(source, (str, os.PathLike))
                    else "<in-memory image>")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            with Image.open(source) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise Image.DecompressionBombError("too many pixels")
                im.seek(0)
                return _as_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInputError(f"{path}: image is larger than {MAX_PIXELS:,} pixels "
                            "(decompression-bomb guard); downscale it first") from None
    except UnidentifiedImageError:
        if _is_empty(source):
            raise BadInputError(f"{path}: empty file (0 bytes), not an image") from None
        raise BadInputError(f"{path}: not a readable image (unknown format or corrupt)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise BadInputError(f"{path}: cannot decode image ({_short(exc)}); the file may be "
                            "truncated or corrupt") from None


def _as_rgb(im):
    """A decoded PIL image as RGB, the one way for files and in-memory images alike: EXIF
    orientation applied, 16-bit and float greyscale rescaled (not clipped), palette and alpha
    composited on white."""
    import numpy as np
    from PIL import Image, ImageOps

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


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def read_text(path: Path) -> tuple[str, str | None]:
    """A text file as str, with one policy for every text input (.txt, .csv, .jsonl): UTF-8,
    a leading byte-order mark dropped, bytes that are not UTF-8 replaced by U+FFFD.  Returns the
    text and a note for the extraction summary when anything was replaced."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        pass
    bad = 0
    for line in raw.splitlines():
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
    return raw.decode("utf-8-sig", errors="replace"), _replaced_note(path, bad)


def _replaced_note(path: Path, bad: int) -> str:
    """The summary's note on a text file whose bytes were not all UTF-8."""
    return (f"{display_name(str(path))}: {bad} line{'s' if bad != 1 else ''} had bytes that are "
            "not UTF-8 (replaced by U+FFFD)")


def _read_manifest(path: Path) -> tuple[list[tuple[int, dict]], str | None]:
    """(line number, row) pairs of a CSV or JSONL manifest, and the decoding note."""
    text, note = read_text(path)
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = []
        try:
            reader.fieldnames  # the header, so that a row's first line is known
            start = reader.line_num + 1
            for row in reader:
                rows.append((start, row))
                start = reader.line_num + 1
        except csv.Error as exc:
            raise BadInputError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
        # a quote left open reads as one field that swallows every later row: an odd number of
        # quotes in all, and a last row that runs over lines (the lenient reader keeps a stray
        # quote inside a field, like '"The Matrix" is great', as text)
        if rows and text.count('"') % 2 and any("\n" in str(v) or "\r" in str(v)
                                                 for v in rows[-1][1].values()):
            raise BadInputError(f"{path}:{rows[-1][0]}: a quote opened in this row is never "
                                "closed, so it would take in the rest of the file")
        return [(n, {k: v for k, v in r.items() if k is not None}) for n, r in rows], note
    rows = []
    for lineno, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise BadInputError(f"{path}:{lineno}: invalid JSON ({why})") from None
        if not isinstance(row, dict):
            raise BadInputError(f"{path}:{lineno}: each line must be a JSON object "
                                '(JSON Lines), e.g. {"path": "a.jpg", "label": "cat"}')
        rows.append((lineno, row))
    return rows, note


def split_lines(text: str) -> list[str]:
    """Lines as an editor numbers them: ended by \\n, \\r\\n or \\r only.  (str.splitlines
    also breaks at form feeds, U+2028 and other separators, which JSON allows inside strings
    and editors show inside a line.)"""
    lines = re.split(r"\r\n|\r|\n", text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def _cell(value) -> str | None:
    """A manifest cell as text (None when empty)."""
    if value is None or value == "":
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _from_manifest(path: Path, label: str | None, within: str | None = None) -> Dataset:
    rows, note = _read_manifest(path)
    if not rows:
        raise BadInputError(f"{path}: the manifest has no rows")
    cols = list(dict.fromkeys(c for _, row in rows for c in row))
    path_col = next((c for c in PATH_COLUMNS if c in cols), None)
    text_col = next((c for c in TEXT_COLUMNS if c in cols), None)
    if path_col is None and text_col is None:
        raise BadInputError(f"{path}: a manifest needs a '{PATH_COLUMNS[0]}' column (images) or "
                            f"a '{TEXT_COLUMNS[0]}' column (texts); found "
                            f"{', '.join(map(str, cols)) or 'no columns'}")
    data_col = path_col or text_col
    other = [c for c in cols if c not in (data_col, "id")]
    label_names = _order_labels(other, label, path)
    fence = os.path.realpath(within) if within else None
    items = []
    for lineno, row in rows:
        labels = {c: v for c in label_names if (v := _cell(row.get(c))) is not None}
        value, given_id = _cell(row.get(data_col)), _cell(row.get("id"))
        if value is None:  # reported and skipped by the extractor, never "None"
            items.append(Item(given_id or str(lineno), labels=labels,
                              error=f"{path}:{lineno}: no '{data_col}' value"))
        elif path_col:
            full = value if os.path.isabs(value) else str(path.parent / value)
            error = None
            if fence and os.path.commonpath([fence, os.path.realpath(full)]) != fence:
                error = f"{value}: outside --within {within}; refused"
            items.append(Item(given_id or value, path=full, labels=labels, error=error))
        else:
            items.append(Item(given_id or str(lineno), text=value, labels=labels))
    ds = Dataset(str(path.parent), "image" if path_col else "text", items, label_names,
                 [note] if note else [])
    _check_unique_ids(ds, path)
    return ds


def _check_unique_ids(ds: Dataset, where):
    repeat = first_repeat(item.id for item in ds.items)
    if repeat is not None:
        ident, first, again = repeat
        raise BadInputError(f"{where}: id '{ident}' is used twice (items {first + 1} and "
                            f"{again + 1}); ids must be unique: fix the 'id' column or remove "
                            "the duplicate row")


def _order_labels(columns: list[str], label: str | None, where) -> list[str]:
    if label is None:
        return sorted(columns, key=lambda c: c != "label")
    if label not in columns:
        raise UsageError(f"{where}: no label column '{label}'; columns are {', '.join(columns)}")
    return [label] + [c for c in columns if c != label]


MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")


def _from_folder(root: Path, label: str | None = None, within: str | None = None) -> Dataset:
    for name in MANIFEST_NAMES:  # a folder that carries its own manifest is that manifest
        if (root / name).is_file():
            return _from_manifest(root / name, label, within)
    # one walk to learn what the folder holds (nothing kept), and another for each use
    counts = {"image": 0, "text": 0}  # files of the kind, and folder problems, per modality
    kinds = {"image": 0, "text": 0}
    labelled = {"image": True, "text": True}
    usable = False
    for e in walk_files(root):
        kind = _kind(e)
        if kind:
            kinds[kind] += 1
            labelled[kind] &= "/" in e.rel
            usable |= e.error is None
        for modality in counts:
            counts[modality] += kind == modality or bool(e.error and e.folder)
    if not usable:
        raise BadInputError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) or .txt "
                            "files found; point at a folder of images or a manifest")
    modality = "image" if kinds["image"] >= kinds["text"] else "text"
    folder = FolderItems(root, modality, labelled[modality], counts[modality])
    # texts are held anyway (Item.text): read them now, once, with their decoding notes
    items = folder if modality == "image" else list(folder)
    return Dataset(str(root), modality, items, ["label"] if labelled[modality] else [],
                   folder.notes)


def _kind(entry) -> str | None:
    suffix = os.path.splitext(entry.rel)[1].lower()
    return "image" if suffix in IMAGE_SUFFIXES else "text" if suffix in TEXT_SUFFIXES else None


class _Streamed(Sequence):
    """Items made again on each iteration instead of held, so a dataset of a million items
    costs no more memory than one of a thousand; `_count` is known from a first pass.  Indexing
    works (by iterating up to the item), for small datasets and tests."""

    _count = 0

    def __len__(self):
        return self._count

    def __getitem__(self, i):
        if isinstance(i, slice):
            return list(itertools.islice(iter(self), *i.indices(len(self))))
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return next(itertools.islice(iter(self), i, None))


class FolderItems(_Streamed):
    """The files of one kind under a folder, in order of relative path (`files.walk_files`),
    with their class subfolder as the label when every file has one; folders that cannot be
    listed or that loop come along as skipped items.  A text file's decoding note, if any, goes
    to `notes` when it is read."""

    def __init__(self, root: Path, modality: str, labelled: bool, count: int):
        self.root, self.modality, self.labelled, self._count = root, modality, labelled, count
        self.notes: list[str] = []

    def __iter__(self):
        for e in walk_files(self.root):
            if _kind(e) != self.modality and not (e.error and e.folder):
                continue
            labels = {"label": e.rel.split("/", 1)[0]} if self.labelled and not e.folder else {}
            if e.error:
                yield Item(e.rel, path=e.path, labels=labels, error=f"{e.rel}: {e.error}")
            elif self.modality == "image":
                yield Item(e.rel, path=e.path, labels=labels)
            else:
                try:
                    text, note = read_text(Path(e.path))
                except OSError as exc:
                    yield Item(e.rel, labels=labels,
                               error=f"{e.rel}: cannot read ({exc.strerror or exc})")
                    continue
                self.notes += [note] if note else []
                yield Item(e.rel, text=text, labels=labels)


class TextLines(_Streamed):
    """The non-empty lines of a .txt file as Items, streamed from the file.  Opening it reads
    the file once, to count the lines and find bytes that are not UTF-8 (the one text policy of
    `read_text`: a byte-order mark dropped, bad bytes replaced by U+FFFD); iterating reads it
    again.  Lines end at \\n, \\r\\n or \\r (`split_lines`), and an item's id is its line
    number, as an editor shows it."""

    BLOCK = 1 << 20

    def __init__(self, path: Path):
        self.path = path
        count = bad = 0
        for _, line, replaced in self._lines():
            count += 1
            bad += replaced
        self._count, self.bad_lines = count, bad

    def _lines(self):
        """(line number, text, whether bytes were replaced) of each non-empty line."""
        lineno, carry = 0, b""
        with open(self.path, "rb") as f:
            while True:
                block = f.read(self.BLOCK)
                data = carry + block
                lines = data.splitlines(keepends=True)
                # an unfinished last line (or a \r that a \n may follow) waits for more
                carry = lines.pop() if block and lines and \
                    not lines[-1].endswith(b"\n") else b""
                for raw in lines:
                    lineno += 1
                    if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                        raw = raw[3:]
                    try:
                        text, replaced = raw.decode("utf-8"), False
                    except UnicodeDecodeError:
                        text, replaced = raw.decode("utf-8", errors="replace"), True
                    text = text.rstrip("\r\n")
                    if text.strip():
                        yield lineno, text, replaced
                if not block:
                    return

    def __iter__(self):
        for lineno, text, _ in self._lines():
            yield Item(str(lineno), text=text)


def _from_text_lines(path: Path) -> Dataset:
    lines = TextLines(path)
    if not len(lines):
        raise BadInputError(f"{path}: the file has no non-empty lines")
    notes = [_replaced_note(path, lines.bad_lines)] if lines.bad_lines else []
    return Dataset(str(path.parent), "text", lines, notes=notes)


def open_dataset(spec, label: str | None = None, within: str | None = None) -> Dataset:
    """A folder, manifest, .txt file, image file, list of paths/texts, or a bundled sample name.

    Args:
        spec: what to read (see above); a Dataset passes through.
        label: the primary label column of a manifest (default: `label`, else the first).
        within: refuse manifest paths whose real location is outside this folder (by default
            a manifest may point anywhere, e.g. at a shared image store).
    """
    if isinstance(spec, Dataset):
        return spec
    ds = _open_dataset(spec, label, within)
    if not _is_values(spec):  # a list names itself (from_list)
        ds.name = display_name(str(spec))
    return ds


def _open_dataset(spec, label: str | None, within: str | None) -> Dataset:
    if _is_values(spec):
        return from_list(spec)
    try:
        path = Path(os.path.expanduser(str(spec)))
        is_dir, is_file = path.is_dir(), path.is_file()
    except (OSError, ValueError) as exc:
        raise NotFoundError(f"{display_name(str(spec))}: cannot be read as a dataset "
                            f"({_short(exc)})") from None
    # an unreadable file or folder is an operating-system refusal (PermissionError: exit 1 in
    # the CLI, naming it), not bad content
    if is_dir:
        ds = _from_folder(path, label, within)
    elif is_file:
        suffix = path.suffix.lower()
        if suffix in MANIFEST_SUFFIXES:
            return _from_manifest(path, label, within)
        if suffix in TEXT_SUFFIXES:
            return _from_text_lines(path)
        if suffix in IMAGE_SUFFIXES:
            return Dataset(str(path.parent), "image",
                           [Item(display_name(path.name), path=str(path))])
        raise UsageError(f"{display_name(str(path))}: not a dataset; give a folder, a "
                         ".csv/.jsonl manifest, a .txt file or an image")
    else:
        from . import samples

        if str(spec) in samples.names():
            return _open_dataset(samples.export(str(spec)), label, within)
        raise NotFoundError(f"{display_name(str(spec))}: no such file, folder or bundled "
                            "dataset (see: embedkit datasets list)")
    if label is not None and ds.label_names[:1] != [label]:
        raise UsageError(f"{spec}: folder datasets have one label column, 'label'")
    return ds


def _is_values(spec) -> bool:
    """Whether a dataset spec is values in memory rather than a path or a sample name."""
    return not isinstance(spec, (str, bytes, os.PathLike)) and (
        hasattr(spec, "__iter__") or hasattr(spec, "__array__") or _is_image(spec))


def from_list(values) -> Dataset:
    """Values in memory as a dataset; ids are positions (0-based, as Python counts), so they are
    unique even when a value repeats (a bootstrap sample, say).

    `values` is a list or tuple, a pandas Series or one-column DataFrame, a Hugging Face
    `datasets` column, a 1-D array of strings, or a 4-D batch of images (NumPy NHWC, torch
    NCHW).  Its elements are all of one kind: paths of existing files (image items, read and
    keyed like any file), other strings (texts), or images: PIL images, uint8 NumPy arrays
    (HWC with 1, 3 or 4 channels, or HW greyscale), torch tensors (CHW, uint8 or float in
    [0, 1]).  Images are decoded to RGB here and keyed on their pixels (`pixels_sha256`).
    Anything else is refused naming its type: a non-string never becomes text.
    """
    values = _elements(values)
    if not values:
        raise UsageError("no input: the list is empty")
    images = [_is_image(v) for v in values]
    if any(images):
        if not all(images):
            other = values[images.index(False)]
            raise UsageError(f"the input mixes images and {_type_name(other)} values; give "
                             "images only, or paths / texts only")
        return Dataset("<in-memory>", "image",
                       [Item(str(i), image=in_memory_image(v)) for i, v in enumerate(values)],
                       name="the given list")
    bad = [v for v in values if not isinstance(v, (str, os.PathLike))][:1]
    if bad:
        raise UsageError(f"inputs are image paths, texts (str) or images (PIL, NumPy, torch); "
                         f"got a {_type_name(bad[0])} ({bad[0]!r:.40})")
    values = [os.fspath(v) for v in values]
    if all(os.path.isfile(v) for v in values):
        return Dataset(os.getcwd(), "image",
                       [Item(str(i), path=os.path.abspath(v)) for i, v in enumerate(values)],
                       name="the given list")
    # an image file among texts would be embedded as the text of its name (other names, such
    # as a text "README.md" that is also a file here, stay texts)
    image = next((v for v in values if os.path.splitext(v)[1].lower() in IMAGE_SUFFIXES
                  and os.path.isfile(v)), None)
    if image is not None:
        text = next(v for v in values if not os.path.isfile(v))
        raise UsageError(f"the input mixes image files ({display_name(image)}) and texts "
                         f"('{text:.40}'); give image paths only, or texts only")
    return Dataset(os.getcwd(), "text", [Item(str(i), text=v) for i, v in enumerate(values)],
                   name="the given list")


def _elements(values) -> list:
    """The elements of a 1-D container of values (see `from_list`)."""
    if isinstance(values, (str, bytes)) or is_pil_image(values):
        one = "string" if isinstance(values, str) else _type_name(values)
        raise UsageError(f"a sequence of inputs is expected, not one {one}; wrap it in a list")
    if hasattr(values, "columns") and hasattr(values, "iloc"):  # a pandas DataFrame
        if len(values.columns) != 1:
            raise UsageError(f"a DataFrame with {len(values.columns)} columns; pass the one "
                             "column to embed, e.g. df['image']")
        values = values.iloc[:, 0]
    if hasattr(values, "shape") and hasattr(values, "ndim") and hasattr(values, "dtype"):
        shape = tuple(values.shape)  # an array or tensor: a 1-D list, one column, or a batch
        if len(shape) == 2 and shape[1] == 1 and getattr(values.dtype, "kind", "") == "O":
            values = values[:, 0]
        elif not (len(shape) == 1 or (len(shape) == 4 and _batch_dtype(values))):
            raise UsageError(f"a 1-D list of image paths, texts or images (or a 4-D batch of "
                             f"images) is expected; got an array of shape {shape}")
    if isinstance(values, dict) or not hasattr(values, "__iter__"):
        raise UsageError(f"a sequence of inputs is expected; got a {_type_name(values)}")
    return [v.item() if hasattr(v, "item") and getattr(v, "ndim", None) == 0 else v
            for v in values]


def _batch_dtype(values) -> bool:
    return str(values.dtype).replace("torch.", "") in ("uint8", "float16", "float32",
                                                        "float64", "bfloat16")


def _type_name(value) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def _torch_tensor(value) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only where torch was imported
    return torch is not None and isinstance(value, torch.Tensor)


def is_pil_image(value) -> bool:
    return "PIL.Image" in sys.modules and isinstance(value, sys.modules["PIL.Image"].Image)


def _is_image(value) -> bool:
    """A PIL image, a NumPy array of 2 or 3 dimensions, or a torch tensor of 2 or 3."""
    if is_pil_image(value):
        return True
    if _torch_tensor(value) or type(value).__module__ == "numpy" and hasattr(value, "ndim"):
        return value.ndim in (2, 3)
    return False


def in_memory_image(value):
    """An in-memory image as an RGB PIL image, by the same conversions as a decoded file
    (`load_image`).  NumPy: uint8 HWC (1, 3 or 4 channels) or HW; torch: CHW (or HW), uint8
    or float in [0, 1] (scaled by 255 and rounded, inverting `ToTensor`).  Refused otherwise,
    naming what is wrong."""
    import numpy as np
    from PIL import Image

    if isinstance(value, Image.Image):
        if 0 in value.size:
            raise UsageError(f"a PIL image of {value.width}x{value.height} pixels is empty; "
                             "an image needs at least one pixel")
        return _as_rgb(value)
    if _torch_tensor(value):
        what = f"a torch tensor of shape {tuple(value.shape)} ({str(value.dtype)[6:]})"
        if value.ndim == 3:
            value = value.permute(1, 2, 0)  # CHW -> HWC
        arr = value.detach().cpu().float().numpy() if value.is_floating_point() else \
            value.detach().cpu().numpy()
        if arr.dtype.kind == "f":
            if not (np.isfinite(arr).all() and arr.min() >= 0.0 and arr.max() <= 1.0):
                raise UsageError(f"{what}: a float image tensor must hold values in [0, 1]")
            arr = np.rint(arr.astype(np.float64) * 255.0).astype(np.uint8)
        layout = "CHW (C = 1, 3 or 4) or HW, uint8 or float in [0, 1]"
    else:
        arr, layout = value, "HWC (C = 1, 3 or 4) or HW, uint8"
        what = f"a NumPy array of shape {arr.shape} ({arr.dtype})"
    if arr.dtype != np.uint8 or arr.ndim == 3 and arr.shape[2] not in (1, 3, 4) or \
            0 in arr.shape:
        raise UsageError(f"{what} is not an image; images in memory are {layout}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return _as_rgb(Image.fromarray(np.ascontiguousarray(arr)))


def load_text_or_file_item(modality: str, item_id: str, source: str | None,
                           file_path: str | None, sha256: str) -> Item | None:
    """The input behind a cached vector, if it is still here: a text (its normalised form must
    hash to the key) or a file whose bytes hash to the key.  None when neither is available."""
    if modality == "text":
        return Item(item_id, text=source) if source is not None and \
            text_sha256(source) == sha256 else None
    for path in (file_path, source):
        if not path:
            continue
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if hashlib.sha256(data).hexdigest() == sha256:
            return Item(item_id, path=path, data=data)
    return None
