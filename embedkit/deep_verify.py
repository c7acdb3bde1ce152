"""`embedkit cache verify --deep`: recompute a sample of cached vectors with the backbones that
made them and compare, within the tolerance of the precision they were computed at.

The checksums of `verify` prove a shard holds what was published; only a recomputation can show
that what was published is what the backbone gives (a plugin bug, weights changed in place).
Vectors made in a CPU runtime (ONNX Runtime, OpenVINO) are recomputed with eager PyTorch, the
reference the runtime must match, at fp32 and within the tolerance of the runtime's precision:
that also catches a runtime that served the wrong exported graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .backbone import Backbone
from .errors import EmbedkitError, UsageError
from .extract import pick_device
from .registry import backbone_from_meta
from .store import Store

__all__ = ["DeepCheck", "TOLERANCE", "verify_deep"]


@dataclass
class DeepCheck:
    """What `verify_deep` found: items recomputed and agreeing, disagreeing, or not checkable."""

    checked: int = 0
    agreed: int = 0
    mismatches: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # no source or backbone to recompute


#: Agreement a recomputed vector must reach: fp32 allows BLAS/threading noise, reduced precision
#: (bf16/fp16 autocast) changes the last bits of every product.
TOLERANCE = {"fp32": {"rtol": 1e-4, "cosine": 0.99999}, "bf16": {"rtol": None, "cosine": 0.99},
             "fp16": {"rtol": None, "cosine": 0.995}}


def verify_deep(store: Store, n: int, device: str = "auto", seed: int = 0) -> DeepCheck:
    """Recompute `n` random cached items with their backbones and compare with the cache.

    An item is checkable when the store knows how its backbone was built (the registry records
    it) and where its content lives now (the text itself, or a file whose bytes still hash to
    the key).  Agreement is within the precision's tolerance (TOLERANCE).
    """
    from .inputs import load_text_or_file_item

    report = DeepCheck()
    if n < 1:
        raise UsageError(f"--deep takes a number of items of 1 or more, not {n}")
    picks = store.sample(n, seed=seed)
    files = store.source_paths([content for _, content, _, _ in picks])
    backbones: dict[str, Backbone | str] = {}
    dev = pick_device(device)
    for fingerprint, content, shard_name, row in picks:
        shard = store.shard(shard_name)
        label = f"{shard.ids[row]} ({fingerprint[:12]})"
        if fingerprint not in backbones:
            backbones[fingerprint] = _rebuild(store.description(fingerprint), fingerprint, dev)
        if isinstance(backbones[fingerprint], str):
            report.unchecked.append(f"{label}: {backbones[fingerprint]}")
            continue
        backbone, precision = backbones[fingerprint]
        item = load_text_or_file_item(backbone.modality, shard.ids[row], shard.sources[row],
                                      files.get(content), content)
        if item is None:
            report.unchecked.append(f"{label}: its input is no longer on this machine")
            continue
        sample = backbone.preprocess(item)
        why = backbone.accept(sample)
        if why is not None:
            report.unchecked.append(f"{label}: {why}")
            continue
        batch = backbone.collate([sample])
        fresh = np.asarray(backbone.embed(batch), dtype=np.float64)[0]
        cached = shard.vectors[row].astype(np.float64)
        report.checked += 1
        tol = TOLERANCE[precision]
        cos = float(fresh @ cached / (np.linalg.norm(fresh) * np.linalg.norm(cached) or 1.0))
        close = cos >= tol["cosine"] and (tol["rtol"] is None or np.allclose(
            fresh, cached, rtol=tol["rtol"], atol=tol["rtol"] * float(np.abs(cached).max())))
        if close:
            report.agreed += 1
        else:
            report.mismatches.append(f"{label}: recomputed vector differs (cosine {cos:.6f})")
    return report


def _rebuild(description: dict, fingerprint: str, device: str):
    """(the backbone that recomputes `fingerprint`'s vectors, the precision they were made at),
    rebuilt from the store's record, or why not.  Vectors made in a CPU runtime are recomputed
    by the eager backbone the runtime ran, at fp32."""
    spec = description.get("rebuild")
    if not spec:
        return "its backbone was not built by name (no recipe to rebuild it)"
    runtime = description.get("runtime", "torch")
    precision = description.get("precision", "fp32")
    try:
        backbone = backbone_from_meta({"backbone": spec})
        # the recorded precision is part of the key (bf16 autocast runs on the CPU too)
        backbone.to(device, precision if runtime == "torch" else "fp32")
        if _fingerprint_in(backbone, runtime, precision) != fingerprint:
            return (f"{spec['name']} rebuilt here has another fingerprint (other weights or "
                    "embedkit version)")
        return backbone, precision
    except EmbedkitError as exc:
        return f"cannot rebuild {spec['name']}: {exc}"


def _fingerprint_in(backbone: Backbone, runtime: str, precision: str) -> str:
    """The fingerprint of `backbone`'s vectors computed in `runtime` at `precision`."""
    if runtime == "torch":
        return backbone.fingerprint()
    from .runtimes import runtime_fingerprint

    return runtime_fingerprint(backbone.fingerprint(), runtime, precision)
