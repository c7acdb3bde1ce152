"""The Backbone contract, and the shared machinery for torch image backbones.

A backbone turns items into float32 vectors.  `preprocess` runs on the CPU side (in DataLoader
workers), `embed` on the device side.  Creating one is cheap: weights load on the first `embed`.
`fingerprint()` hashes everything that changes the output and is the model half of every cache key.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import warnings
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .errors import BadInputError, BadWeights, NotFoundError, UsageError
from .options import POOLINGS

__all__ = ["FLATTEN_LIMIT", "RESIZE_LIMIT", "VECTOR_FORMAT_VERSION", "autocast", "Backbone",
           "BackboneFamily", "file_sha256", "fingerprint_of", "ImagePreprocess", "last_linear", "LayerInfo",
           "load_state_dict_file", "pool_features", "remembered", "TorchImageBackbone",
           "unknown_options", "WeightsSource", "WrappingBackbone"]

#: Bumped whenever the way vectors are computed or stored changes: old cache entries then miss.
#: 2: the short-side resize truncates the long side as torchvision and timm do (it rounded).
VECTOR_FORMAT_VERSION = 2

#: Resizing the short side must not create more pixels than this (extreme aspect ratios).
RESIZE_LIMIT = 16_000_000
#: `--pool flatten` refuses layers whose flattened output is larger than this many values.
FLATTEN_LIMIT = 100_000


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's weights come from: `available` says they are on this machine now,
    `downloadable` that the backbone can fetch them into its library's own cache where the
    network allows (so extraction tries, and an offline failure names the file and folder)."""

    description: str
    available: bool
    path: str | None = None
    hint: str = ""
    downloadable: bool = False

    @property
    def obtainable(self) -> bool:
        return self.available or self.downloadable


class Backbone(ABC):
    """The contract every plugin returns: every member the core and the CLI use is declared
    here, the optional ones with a default, so no caller ever probes with `getattr`.

    Required: `name`, `modality`, `dim`, `layers()`, `source`, `fingerprint()`, `preprocess()`,
    `embed()`.  The contract test (tests/test_registry.py) runs over every registered backbone.
    """

    #: Registry name, e.g. "efficientnet_lite0", "glove-6b-50d".
    name: str
    #: "image" or "text": what `preprocess` accepts.
    modality: str
    #: The plugin family that built it (its entry-point name).
    family: str = ""
    #: The layer read (None for backbones with a single output), its pooling, and whether
    #: vectors are L2-normalised; recorded in every EmbeddingSet's meta.
    layer: str | None = None
    pool: str | None = None
    normalize: bool = False
    #: Where `embed` runs and at which precision ("fp32", "bf16", "fp16"); set by `to()`.
    #: A precision that changes the vectors must be part of `fingerprint()`.
    device: str = "cpu"
    precision: str = "fp32"
    #: The inference runtime: "torch", or "onnx" / "openvino" for a wrapped backbone.
    runtime: str = "torch"
    #: Whether `embed` runs on an accelerator (torch models).  A backbone that computes with
    #: NumPy alone (word vectors) says False: extraction then never imports torch to pick a
    #: device, which saves seconds and hundreds of MB at start-up.
    uses_device: bool = True
    #: Image backbones whose input is an RGB PIL image turned into a tensor this way (the
    #: weights' own preprocessing); augmentation reuses it.  None for other backbones.
    preprocessing: "ImagePreprocess | None" = None
    #: How the registry built this backbone ({"name": ..., "options": {...}}), so a cached
    #: vector can be recomputed later (`embedkit cache verify --deep`); None if built by hand.
    creation: dict | None = None

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of one vector for the chosen layer and pooling."""

    @abstractmethod
    def layers(self) -> list[str]:
        """Extractable layer names, the default first."""

    @property
    @abstractmethod
    def source(self) -> WeightsSource:
        """Where the weights come from, and whether they are on this machine now."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A stable hash of everything that changes a vector (weights identity, architecture,
        layer, pooling, preprocessing, precision, the vector format version): the model half of
        every cache key."""

    @abstractmethod
    def preprocess(self, item) -> Any:
        """An `Item` -> one model input.  Runs on the CPU side, possibly in a DataLoader worker
        process: it must not rely on changing the backbone (changes are lost with workers).
        Raise `BadInputError` naming the item when it cannot be used."""

    @abstractmethod
    def embed(self, batch) -> np.ndarray:
        """A collated batch -> float32 [n, dim] (device side, in the extracting process)."""

    def accept(self, sample) -> str | None:
        """Called in the extracting process for each preprocessed sample before batching:
        why it cannot be embedded, or None.  Statistics over the items (e.g. OOV rates) are
        gathered here, where they survive DataLoader workers, and read back by `report()`."""
        return None

    def tower(self, modality: str) -> "Backbone | None":
        """The backbone of the same model that embeds `modality`, or None: itself for its own
        modality; the other tower for models with an image and a text tower in one space
        (CLIP).  `extract` asks this for the dataset's modality, so one `--model` name
        embeds photos and captions alike."""
        return self if modality == self.modality else None

    def collate(self, samples: list) -> Any:
        """Turn a list of preprocessed samples into one batch for `embed`."""
        return samples

    def to(self, device: str = "cpu", precision: str = "fp32") -> "Backbone":
        """Run `embed` on `device` at `precision` (weights move lazily)."""
        self.device, self.precision = device, precision
        return self

    def report(self) -> list[str]:
        """Notes for the extraction summary about the items accepted since the last report
        (e.g. OOV rates); reading them resets them."""
        return []

    def report_state(self):
        """What `report` would summarise since the last report, as a picklable value, or None;
        reading it resets it.  An engine whose model runs in other processes (Ray actors)
        sends it back, and the driver's backbone adds it in with `merge_report`."""
        return None

    def merge_report(self, state) -> None:
        """Add another process's `report_state()` into what this backbone will report."""

    def layer_info(self) -> dict[str, "LayerInfo"]:
        """Every extractable layer with the shape of one item's output.  The default suits a
        backbone with one output per layer: a `dim`-long vector."""
        return {name: LayerInfo(name, "", (self.dim,)) for name in self.layers()}

    @property
    def keyed_vectors(self):
        """gensim KeyedVectors behind a word-vector backbone (word queries, analogies); None
        for every other backbone."""
        return None

    def encode(self, items, batch_size: int = 32, show_progress_bar: bool | None = None,
               normalize_embeddings: bool = False, **extract_options) -> np.ndarray:
        """`embedkit.encode(items, self, ...)`: float32 vectors in input order, through the
        cache (the sentence-transformers convention)."""
        from .extract import encode

        return encode(items, self, batch_size=batch_size, show_progress_bar=show_progress_bar,
                      normalize_embeddings=normalize_embeddings, **extract_options)

    def describe(self) -> dict:
        """One row of `embedkit models`."""
        src = self.source
        return {
            "name": self.name,
            "modality": self.modality,
            "family": self.family,
            "layer": self.layer or self.layers()[0],
            "dim": self.dim,
            "weights": src.description,
            "offline": src.available,
        }


class WrappingBackbone(Backbone):
    """A backbone that reads features as the backbone it wraps does (its layer, pooling,
    normalisation, dimension and weights) and changes one other thing: how the items are
    prepared (augmentation) or where `embed` runs (a CPU runtime).  Subclasses set `wrapped`,
    add that change to `fingerprint()`, and delegate whatever else they keep."""

    wrapped: Backbone

    layer = property(lambda self: self.wrapped.layer)
    pool = property(lambda self: self.wrapped.pool)
    normalize = property(lambda self: self.wrapped.normalize)

    @property
    def dim(self) -> int:
        return self.wrapped.dim

    def layers(self) -> list[str]:
        return self.wrapped.layers()

    @property
    def source(self) -> WeightsSource:
        return self.wrapped.source

    def layer_info(self) -> dict[str, "LayerInfo"]:
        return self.wrapped.layer_info()


def fingerprint_of(**parts) -> str:
    """Stable sha256 over everything that changes a vector, plus the vector format version."""
    parts = {"format": VECTOR_FORMAT_VERSION, **parts}
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state_dict_file(path: str) -> dict:
    """Weights from a .safetensors or .pth/.bin file, never unpickling arbitrary objects
    (`torch.load(weights_only=True)`).  A file that is not a plain weights checkpoint is refused
    in one line naming it."""
    import torch

    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            try:
                return load_file(path)
            except Exception as exc:  # SafetensorError and friends: one line, naming the file
                raise ValueError(_first_line(exc)) from None
        with warnings.catch_warnings():  # torch's own note on the pickle protocol: our error
            warnings.simplefilter("ignore", UserWarning)  # line is the one the user needs
            state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        if exc.errno:
            raise BadWeights(f"{path}: cannot read the weights file ({exc.strerror})") from None
        raise BadWeights(f"{path}: refused: not a readable weights file; {_first_line(exc)}") \
            from None
    except Exception as exc:  # noqa: BLE001 - garbage makes torch.load raise almost anything
        # (UnpicklingError, KeyError, RuntimeError, ...); torch's own text goes on to advise
        # weights_only=False, which is exactly what must not be done: keep its first sentence
        reason = _first_line(exc).split(". ")[0].rstrip(".")
        raise BadWeights(
            f"{path}: refused: not a plain weights checkpoint (embedkit loads weights only "
            f"with torch.load(weights_only=True) or safetensors, never arbitrary pickled "
            f"objects); {reason}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise BadWeights(f"{path}: refused: holds a {type(state).__name__}, not a state dict "
                         "of tensors")
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def file_sha256(path: str) -> str:
    """sha256 of a file, memoised on (path, size, mtime) for the life of the process."""
    st = os.stat(path)
    return _file_sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)


# --------------------------------------------------------------------------------------------
# Images


@dataclass(frozen=True)
class ImagePreprocess:
    """Preprocessing carried by a weight set: resize the short side, centre-crop, normalise."""

    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"  # bilinear | bicubic | nearest

    @classmethod
    def from_crop_pct(cls, input_size, crop_pct, mean, std, interpolation="bilinear"):
        import math

        return cls(int(input_size), int(math.floor(input_size / crop_pct)), tuple(mean),
                   tuple(std), interpolation)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) once the short side is resized to `resize_size`: the long side is
        truncated, `int(resize_size * long / short)`, as torchvision's `Resize(int)` computes
        it; timm's eval transform uses that same Resize for the square inputs embedkit takes.
        Rounding it (embedkit up to vector format 1) made about half of all non-square images
        one pixel longer than both libraries make them, and changed their vectors."""
        short, long = sorted((width, height))
        new_long = int(self.resize_size * long / short)
        return (self.resize_size, new_long) if width <= height else (new_long, self.resize_size)

    def __call__(self, image):
        """PIL RGB image -> float32 tensor [3, input_size, input_size]."""
        import torch
        from PIL import Image

        resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                    "nearest": Image.NEAREST}[self.interpolation]
        w, h = image.size
        nw, nh = self.resized_size(w, h)
        if nw * nh > RESIZE_LIMIT:  # a 20000x1 strip would become 5,120,000 x 256 pixels
            raise BadInputError(
                f"{w}x{h} image: its aspect ratio is too extreme to resize to "
                f"{self.resize_size} px on the short side ({nw:,}x{nh:,} pixels); crop or pad "
                "it first")
        image = image.resize((nw, nh), resample)
        left = int(round((nw - self.input_size) / 2.0))
        top = int(round((nh - self.input_size) / 2.0))
        image = image.crop((left, top, left + self.input_size, top + self.input_size))
        arr = np.asarray(image, dtype=np.float32) / 255.0
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def autocast(device_type: str, precision: str):
    """torch autocast at a reduced `precision` ("bf16", "fp16"); a disabled context for "fp32".
    The one place that maps embedkit's precision names to torch dtypes."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device_type=device_type, dtype=dtype or torch.float32,
                          enabled=dtype is not None)


class _StopForward(Exception):
    """Raised by a hook once the wanted layer has run, so later layers cost nothing."""


def pool_features(x, pool: str | None):
    """Reduce a layer output to one vector per item.

    [n, d] passes through; [n, c, h, w] (conv maps) and [n, tokens, d] (transformer blocks) are
    pooled over space / tokens with avg, max, GeM (p=3) or flattened.
    """
    if x.ndim == 2:
        return x
    if pool == "flatten":
        return x.flatten(1)
    dims = (2, 3) if x.ndim == 4 else (1,)
    if pool in (None, "avg"):
        return x.mean(dim=dims)
    if pool == "max":
        return x.amax(dim=dims)
    if pool == "gem":
        return x.float().clamp(min=1e-6).pow(3).mean(dim=dims).pow(1.0 / 3)
    POOLINGS.check(pool)


@dataclass
class LayerInfo:
    name: str
    module: str  # dotted module path ("" = the model's output)
    shape: tuple  # output shape of one item, e.g. (1280,) or (112, 14, 14)
    hook: str = "output"  # "output" | "input" (pre-logits = input of the classifier)


class TorchImageBackbone(Backbone):
    """A torch classification network used frozen, read at any layer.

    Layers: `pre_logits` (the pooled penultimate features, default), the network's blocks from
    low-level to high-level (their dotted module paths), and `logits` (class scores over the
    source classes, used by LEEP / NCE).
    """

    modality = "image"

    def __init__(self, name: str, *, family: str, build: Callable[[], Any],
                 load_weights: Callable[[Any], None], weights_id: str, source: WeightsSource,
                 preprocessing: ImagePreprocess, block_modules: Callable[[Any], list[str]],
                 classifier_module: Callable[[Any], str], layer: str | None = None,
                 pool: str | None = None, normalize: bool = False,
                 class_names: Callable[[], Sequence[str]] | None = None):
        self.name = name
        self.family = family
        self._build = build
        self._load_weights = load_weights
        self._weights_id = weights_id
        self._source = source
        self.preprocessing = preprocessing
        self._block_modules = block_modules
        self._classifier_module = classifier_module
        self._class_names = class_names
        self.layer = layer or "pre_logits"
        self.pool = pool
        self.normalize = normalize
        self.device = "cpu"
        self.precision = "fp32"
        self._model = None
        self._layer_info: dict[str, LayerInfo] | None = None
        if self.layer != "pre_logits" or pool is not None:  # the default needs no probe
            self._check_layer()

    # -- description ------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str] | None:
        """Names of the source classes behind the `logits` layer (ImageNet for most)."""
        return list(self._class_names()) if self._class_names else None

    @property
    def source(self) -> WeightsSource:
        return self._source

    @property
    def preprocessing(self) -> ImagePreprocess:
        return self._preprocessing

    @preprocessing.setter
    def preprocessing(self, value: ImagePreprocess):
        """Another preprocessing (fine-tuning at another input size) changes the layers' output
        shapes, so what was probed at the old size is forgotten."""
        self._preprocessing = value
        self._layer_info = None

    def layer_info(self) -> dict[str, LayerInfo]:
        """Every extractable layer with its output shape, probed on the meta device (no weights)
        once per architecture, library version and input size, then remembered in the cache
        folder."""
        if self._layer_info is None:
            self._layer_info = _layer_shape_cache(
                f"{self.family}/{self.name}/{self.preprocessing.input_size}", self._probe_layers)
        return self._layer_info

    def layers(self) -> list[str]:
        names = list(self.layer_info())
        names.remove("pre_logits")
        return ["pre_logits", *names]

    def _check_layer(self):
        info = self.layer_info()
        if self.layer not in info:
            import difflib

            close = difflib.get_close_matches(self.layer, list(info), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise NotFoundError(
                f"{self.name} has no layer '{self.layer}'.{hint} "
                f"List them with: embedkit layers {self.name}")
        if self.pool is not None:
            POOLINGS.check(self.pool)
        shape = info[self.layer].shape
        if len(shape) == 1 and self.pool not in (None,):
            raise UsageError(
                f"layer '{self.layer}' of {self.name} is already a vector ({shape[0]}-d); "
                f"--pool applies to block layers (see: embedkit layers {self.name})")
        if self.pool == "flatten" and int(np.prod(shape)) > FLATTEN_LIMIT:
            raise UsageError(
                f"--pool flatten on layer '{self.layer}' of {self.name} would give "
                f"{int(np.prod(shape)):,} values per item (shape {shape}), over the limit of "
                f"{FLATTEN_LIMIT:,}; use --pool avg|max|gem or a later layer")

    @property
    def dim(self) -> int:
        shape = self.layer_info()[self.layer].shape
        if len(shape) == 1 or self.pool == "flatten":
            return int(np.prod(shape))
        return int(shape[0]) if len(shape) == 3 else int(shape[-1])

    def fingerprint(self) -> str:
        return fingerprint_of(
            modality="image", family=self.family, arch=self.name, weights=self._weights_id,
            layer=self.layer, pool=self._effective_pool(), normalize=self.normalize,
            preprocess=asdict(self.preprocessing),
            # reduced precision changes the vectors; fp32 keeps the key it always had
            **({"precision": self.precision} if self.precision != "fp32" else {}))

    def _effective_pool(self):
        shape = self.layer_info()[self.layer].shape
        return "none" if len(shape) == 1 else (self.pool or "avg")

    # -- model ------------------------------------------------------------------------------
    def _probe_layers(self) -> dict[str, LayerInfo]:
        import torch

        with _parameters_on_meta():
            model = self._build()
        model = model.eval().to("meta")
        classifier = self._classifier_module(model)
        wanted = [LayerInfo(m, m, ()) for m in self._block_modules(model)]
        modules = dict(model.named_modules())
        shapes: dict[str, tuple] = {}
        handles = []
        for info in wanted:
            handles.append(modules[info.module].register_forward_hook(
                lambda mod, inp, out, key=info.module: shapes.__setitem__(key, tuple(out.shape[1:]))))
        handles.append(modules[classifier].register_forward_pre_hook(
            lambda mod, inp: shapes.__setitem__("pre_logits", tuple(inp[0].shape[1:]))))
        size = self.preprocessing.input_size
        with torch.no_grad():
            out = model(torch.empty(1, 3, size, size, device="meta"))
        for h in handles:
            h.remove()
        layers = {"pre_logits": LayerInfo("pre_logits", classifier, shapes["pre_logits"], "input")}
        for info in wanted:
            layers[info.name] = LayerInfo(info.name, info.module, shapes[info.module])
        layers["logits"] = LayerInfo("logits", "", tuple(out.shape[1:]))
        return layers

    @property
    def model(self):
        if self._model is None:
            import torch

            model = self._build()
            try:
                self._load_weights(model)
            except RuntimeError as exc:  # load_state_dict: missing / unexpected / mis-shaped keys
                raise BadWeights(f"the weights do not fit {self.name} ({self._source.description}): "
                                 f"{_first_line(exc)}") from None
            model.eval().requires_grad_(False)
            # channels-last is faster for these convnets on CUDA and on CPU alike (about 2x
            # for EfficientNet-Lite0 on a 2-core CPU: python -m benchmarks)
            self._model = model.to(self.device, memory_format=torch.channels_last)
        return self._model

    def to(self, device: str = "cpu", precision: str = "fp32") -> "TorchImageBackbone":
        self.device, self.precision = device, precision
        if self._model is not None:
            self._model = self._model.to(device)
        return self

    def preprocess(self, item):
        from .inputs import load_image

        return self.preprocessing(load_image(item))

    def collate(self, samples):
        import torch

        return torch.stack(samples)

    def embed(self, batch) -> np.ndarray:
        import torch

        model = self.model
        info = self.layer_info()[self.layer]
        captured = {}
        handle = None
        if info.module:
            module = dict(model.named_modules())[info.module]
            if info.hook == "input":
                def hook(mod, inp):
                    captured["x"] = inp[0]
                    raise _StopForward
                handle = module.register_forward_pre_hook(hook)
            else:
                def hook(mod, inp, out):
                    captured["x"] = out
                    raise _StopForward
                handle = module.register_forward_hook(hook)
        x = batch.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        try:
            with torch.inference_mode(), autocast(x.device.type, self.precision):
                try:
                    captured["x"] = model(x)
                except _StopForward:
                    pass
                feats = pool_features(captured["x"], self.pool).float()
                if self.normalize:
                    feats = torch.nn.functional.normalize(feats, dim=1)
        finally:
            if handle is not None:
                handle.remove()
        return feats.cpu().numpy().astype(np.float32, copy=False)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_model"] = None  # weights reload lazily in the receiving process
        return state


@contextlib.contextmanager
def _parameters_on_meta():
    """Build a model without allocating or initialising its weights: every parameter moves to
    the meta device as it registers (unlike `with torch.device("meta")`, builders that compute
    their widths with tensors, such as RegNet's, still run)."""
    import torch

    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        register(module, name, param)
        if param is not None:
            module._parameters[name] = torch.nn.Parameter(param.to("meta"),
                                                          requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def remembered(filename: str, key: str, compute: Callable[[], Any]) -> Any:
    """`compute()` once per `key`, remembered as JSON in `filename` under the cache folder
    (layer shapes per architecture, a library's model list per version).  Keys should name the
    library versions the answer depends on.  A read-only or damaged file only costs a
    recomputation."""
    from .files import atomic_write
    from .store import default_root

    path = default_root() / filename
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    known[key] = value = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(known))
    except OSError:
        pass
    return value


def _layer_shape_cache(key: str, probe) -> dict[str, LayerInfo]:
    import torch

    def shapes():
        return [[i.name, i.module, list(i.shape), i.hook] for i in probe().values()]

    rows = remembered("layer-shapes.json",
                      f"{key}/torch-{torch.__version__}/format-{VECTOR_FORMAT_VERSION}", shapes)
    return {n: LayerInfo(n, m, tuple(s), h) for n, m, s, h in rows}


def last_linear(model) -> str:
    """Dotted name of the last nn.Linear: the classifier head of torchvision / timm classifiers."""
    import torch

    name = None
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            name = n
    if name is None:
        raise UsageError(f"{type(model).__name__} has no linear classifier head")
    return name


class BackboneFamily:
    """What an `embedkit.backbones` entry point names: a family of backbones.

    Subclass and set `name` / `modality`; override `models()` (listed names), `handles(name)`
    (unlisted names it also builds) and `create(name, **options)`.
    """

    name = ""
    modality = "image"

    def models(self) -> list[str]:
        return []

    def handles(self, name: str) -> bool:
        """Cheap test of whether this family builds `name` (no heavy imports); the registry asks
        every family this before it falls back to the full `models()` listings."""
        return False

    def create(self, name: str, **options) -> Backbone:
        raise NotImplementedError


def unknown_options(name: str, options: dict, allowed: Sequence[str]):
    extra = sorted(set(options) - set(allowed))
    if extra:
        raise UsageError(f"{name} does not take option(s) {', '.join(extra)}; "
                         f"it takes {', '.join(allowed)}")
