"""Inference runtimes for the torch image backbones on the CPU: eager PyTorch, ONNX Runtime, OpenVINO.

Eager PyTorch runs a convnet one operator at a time; a graph runtime fuses convolution, batch norm
and activation, picks kernels for this CPU and plans memory once.  On a 2-core Xeon with AVX-512
that is 4x (ONNX Runtime) to 6x (OpenVINO, fp32) the eager speed for EfficientNet-Lite0 (measured
by `python -m benchmarks`, see docs/performance.md).

The network, cut at the chosen layer and followed by the chosen pooling (`feature_model`), is
exported once per architecture, weights, layer and pooling to ONNX (torch.export-based exporter)
and cached beside the store in `<store>/runtimes/<name>-<key>.onnx`; ONNX Runtime runs that file,
OpenVINO compiles the same file (about a second, so it keeps no compiled blob: every file it runs
is checked).  The export is recorded when it is written (`artifact_records`: the sha256 of its
bytes and what it was made from) and checked against that record before each run's first use: a
file that differs (another model's export copied over it, edited weights, a truncated file) is
exported again, never run.  Vectors equal eager PyTorch's within float32 rounding (max abs
difference about 1e-5, tests/test_runtimes.py); with OpenVINO's bf16 inference precision (CPUs
with avx512_bf16 / AMX only) cosine 0.998 to 0.9997 per image (docs/performance.md).  Each
runtime and precision is its own fingerprint part, so their vectors never mix with eager ones in
the cache.

`feature_model` is also what the GPU path compiles (`device_decode`): one cut-and-pool module for
every fast path.
"""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from .artifact_records import RUNTIME_EXPORTS, record_problem, write_recorded
from .backbone import (Backbone, TorchImageBackbone, WrappingBackbone, fingerprint_of,
                       pool_features)
from .errors import MissingExtra, UsageError
from .files import available_cores
from .options import RUNTIMES

__all__ = ["EXPORT_VERSION", "OPSET", "export_onnx", "export_path", "feature_model",
           "RuntimeBackbone", "runtime_fingerprint", "with_runtime"]

#: Bumped when the export changes (opset, exporter options): old exported files then miss.
EXPORT_VERSION = 1
OPSET = 18


def feature_model(backbone: TorchImageBackbone):
    """A plain module: images [n, 3, s, s] -> float32 vectors [n, dim], the backbone's layer and
    pooling with no hooks, so that exporters and `torch.compile` can trace it.

    `pre_logits` is the network with its classifier replaced by Identity (its output is then the
    classifier's input); `logits` is the whole network; a block layer is cut with an FX feature extractor
    (torchvision's, through timm so that timm's own leaf modules trace).
    """

    info = backbone.layer_info()[backbone.layer]
    model = backbone.model
    if backbone.layer == "logits":
        trunk = model
    elif info.hook == "input":
        trunk = copy.deepcopy(model)
        parent_name, _, leaf = info.module.rpartition(".")
        parent = trunk.get_submodule(parent_name) if parent_name else trunk
        setattr(parent, leaf, torch.nn.Identity())
    else:
        from timm.models import create_feature_extractor  # torchvision's, knowing timm's leaves

        try:
            trunk = _Only(create_feature_extractor(model, return_nodes={info.module: "x"}))
        except Exception as exc:  # FX cannot trace every architecture
            raise UsageError(f"{backbone.name}: layer '{backbone.layer}' cannot be cut out for a "
                             f"compiled runtime ({type(exc).__name__}); use --runtime torch "
                             "or the pre_logits / logits layer") from None
    return _Features(trunk, backbone.pool, backbone.normalize).eval()


class _Only(torch.nn.Module):
    """The single output of an FX feature extractor (it returns a dict)."""

    def __init__(self, extractor):
        super().__init__()
        self.extractor = extractor

    def forward(self, x):
        return self.extractor(x)["x"]


class _Features(torch.nn.Module):
    def __init__(self, trunk, pool, normalize):
        super().__init__()
        self.trunk, self.pool, self.normalize = trunk, pool, normalize

    def forward(self, x):
        feats = pool_features(self.trunk(x), self.pool).float()
        return torch.nn.functional.normalize(feats, dim=1) if self.normalize else feats


def export_onnx(backbone: TorchImageBackbone, folder: Path) -> Path:
    """The backbone's feature model as ONNX in `folder`, exported on first use and again
    whenever the file there fails its record (`record_problem`), with a one-line note on stderr
    naming the file and why.  Atomic renames, so concurrent runs at worst export twice."""
    backbone.to("cpu", "fp32")
    made_from = _export_origin(backbone)
    path = _export_file(folder, backbone.name, made_from)
    problem = record_problem(path, made_from)
    if problem is None:
        return path
    if path.exists():
        print(f"embedkit: runtime export {path}: {problem}; exporting it again", file=sys.stderr)
    _require("onnxscript", "exporting to ONNX", "onnx", "onnxscript")
    path.parent.mkdir(parents=True, exist_ok=True)
    size = backbone.preprocessing.input_size
    example = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            feature_model(backbone), (example,), input_names=["images"],
            output_names=["vectors"], dynamic_shapes=({0: torch.export.Dim("n")},),
            opset_version=OPSET, dynamo=True, verbose=False)
        return write_recorded(path, lambda tmp: program.save(str(tmp), external_data=False),
                              made_from)


def export_path(backbone: TorchImageBackbone, folder: Path) -> Path:
    """Where `folder` keeps the export of `backbone` (its name and a hash of its origin)."""
    return _export_file(folder, backbone.name, _export_origin(backbone))


def _export_file(folder: Path, name: str, made_from: dict) -> Path:
    return Path(folder) / f"{name}-{fingerprint_of(**made_from)}.onnx"


def _export_origin(backbone: TorchImageBackbone) -> dict:
    """What an export is made from: the backbone (weights, layer, pooling...) and the exporter."""
    return {"backbone": backbone.fingerprint(), "export": EXPORT_VERSION, "opset": OPSET,
            "torch": torch.__version__.split("+")[0]}


def _require(module: str, what: str, extra: str, package: str):
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingExtra(what, extra, package)


class RuntimeBackbone(WrappingBackbone):
    """A TorchImageBackbone whose `embed` runs in ONNX Runtime or OpenVINO on the CPU.

    Everything else (layers, preprocessing in the loader workers, description) is the wrapped
    backbone's; the fingerprint adds the runtime and its precision.
    """

    def __init__(self, inner: TorchImageBackbone, runtime: str, folder: Path):
        if RUNTIMES.check(runtime) == "torch":
            raise UsageError("RuntimeBackbone wraps a backbone for onnx or openvino, not torch")
        if not isinstance(inner, TorchImageBackbone):
            raise UsageError(f"--runtime {runtime} runs torch image backbones; {inner.name} is "
                             f"a {inner.modality} model (use --runtime torch)")
        _require("onnxruntime" if runtime == "onnx" else "openvino", f"--runtime {runtime}",
                 runtime, "onnxruntime" if runtime == "onnx" else "openvino")
        self.wrapped, self.runtime, self.folder = inner, runtime, Path(folder)
        self.name, self.family, self.modality = inner.name, inner.family, inner.modality
        self.precision = "fp32"
        self._session = None

    # the wrapped backbone's preprocessing and classes
    preprocessing = property(lambda self: self.wrapped.preprocessing)
    class_names = property(lambda self: self.wrapped.class_names)
    # the wrapped backbone's recipe: `cache verify --deep` recomputes these vectors eagerly
    creation = property(lambda self: self.wrapped.creation)

    def fingerprint(self) -> str:
        return runtime_fingerprint(self.wrapped.fingerprint(), self.runtime, self.precision)

    def preprocess(self, item):
        return self.wrapped.preprocess(item)

    def collate(self, samples):
        return self.wrapped.collate(samples)

    def describe(self) -> dict:
        return {**self.wrapped.describe(), "runtime": self.runtime, "precision": self.precision}

    def to(self, device: str = "cpu", precision: str = "fp32") -> "RuntimeBackbone":
        if device != "cpu":
            raise UsageError(f"--runtime {self.runtime} runs on the CPU; on {device} use "
                             "--runtime torch")
        if precision == "auto":
            precision = "fp32"
        if precision not in ("fp32", "bf16") or (precision == "bf16"
                                                 and self.runtime != "openvino"):
            raise UsageError(f"--runtime {self.runtime} on the CPU takes --precision fp32"
                             + (" or bf16" if self.runtime == "openvino" else ""))
        if precision == "bf16" and "BF16" not in _openvino_core().get_property(
                "CPU", "OPTIMIZATION_CAPABILITIES"):
            raise UsageError("--precision bf16 needs a CPU with bf16 instructions (avx512_bf16 or "
                             "AMX); this one has none: use fp32")
        self.wrapped.to("cpu", "fp32")
        if precision != self.precision:
            self._session = None
        self.precision = precision
        return self

    def _run(self):
        if self._session is None:
            path = export_onnx(self.wrapped, self.folder)
            if self.runtime == "onnx":
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = available_cores()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                session = ort.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
                self._session = lambda x: session.run(None, {"images": x})[0]
            else:
                core = _openvino_core()
                compiled = core.compile_model(str(path), "CPU", {
                    "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[self.precision],
                    "PERFORMANCE_HINT": "LATENCY"})  # one batch at a time, all cores on it
                request = compiled.create_infer_request()
                self._session = lambda x: request.infer({0: x})[0]
        return self._session

    def embed(self, batch) -> np.ndarray:
        x = np.ascontiguousarray(batch.numpy() if hasattr(batch, "numpy") else batch,
                                 dtype=np.float32)
        return np.array(self._run()(x), dtype=np.float32, copy=True)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_session"] = None  # sessions do not pickle; workers only preprocess
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)


def runtime_fingerprint(eager_fingerprint: str, runtime: str, precision: str) -> str:
    """The fingerprint of vectors computed in `runtime` at `precision` by the backbone whose
    eager fingerprint is given: its own cache key, never mixed with eager vectors."""
    return fingerprint_of(backbone=eager_fingerprint, runtime=runtime, precision=precision)


def _openvino_core():
    import openvino as ov

    return ov.Core()


def with_runtime(backbone: Backbone, runtime: str, store_root) -> Backbone:
    """`backbone` itself for the torch runtime, else wrapped to run in `runtime`, its exported
    graphs cached under `<store_root>/runtimes`."""
    if runtime in (None, "torch"):
        return backbone
    return RuntimeBackbone(backbone, runtime, Path(store_root) / RUNTIME_EXPORTS)
