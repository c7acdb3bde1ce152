"""Fine-tuning: unfreeze the top of a pretrained network, train it with a new linear head, and keep
the result as a backbone of its own.

The rule of thumb (`embedkit.advice`): with a small target like the source, freeze the network and
train a classifier on its features; with more data or a less similar source, tune the top layers.
Lower layers compute generic features (edges, textures) that transfer; higher layers are specific
to the source task (Yosinski et al. 2014, "How transferable are features in deep neural
networks?").  So the bottom stays frozen and the top is tuned with small learning rates that grow
toward the head: discriminative fine-tuning (Howard & Ruder 2018, ULMFiT), where a large rate
would make the network forget what it learnt.

How the network is cut:
- a *unit* is one block layer (`embedkit layers MODEL`) with everything that runs between the
  previous block's output and its own, found by tracing one forward pass (the stem joins the
  first block; EfficientNet's conv_head joins bn2).  `unfreeze="top-N"` tunes the N units just
  below the layer the head reads, `"all"` every unit, `"none"` the head alone.
- frozen units stay in eval mode whatever `train()` says: their BatchNorm statistics remain the
  source's (a few small target batches would otherwise overwrite them) and their weights get no
  gradient, so they stay bit for bit as loaded.
- one optimizer parameter group per tuned unit: the head gets `lr`, the unit under it
  `lr * lr_decay`, the next `lr * lr_decay**2`, ...; AdamW (Loshchilov & Hutter 2019) or SGD
  with Nesterov momentum; a linear warm-up (Goyal et al. 2017) then cosine decay (Loshchilov &
  Hutter 2017) over all steps.
- label smoothing (Szegedy et al. 2016) and class-balanced loss weights (inverse class
  frequency) for small and imbalanced targets; augmentation on the fly with embedkit's own
  recipes (`embedkit.augment`): epoch e trains on augmented view e + 1 of every image.
- a stratified held-out validation split (the same `holdout_split` the classifiers use) chooses
  the best epoch and stops early; the best weights are what is saved.
- every epoch writes one checkpoint file atomically (tuned tensors, optimizer and RNG state as
  safetensors, the rest as JSON in its metadata; never pickle), so `resume=True` continues a
  killed run; everything random is a function of the seed and the epoch, so the result on the
  CPU is the same as an uninterrupted run's.

The output folder holds `model.safetensors` (the whole network with its new head) and
`finetune.json` (base architecture and fingerprint, layer, preprocessing, classes, training
options and history).  `embedkit.plugins.finetuned` makes the folder a backbone: `--model OUT/`
works wherever a model name does, with a fingerprint of its own (from the weights' sha256).
What is read back (`read_folder`, `read_checkpoint`) is held to what this module writes before
anything is built from it: finetune.json and a checkpoint's metadata to declared schemas, the
base to the registry, the tensors to the network; anything else is refused in one line.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from . import schema
from .errors import (BadInputError, BadWeights, EmbedkitError, NotFoundError, UsageError,
                     WeightsUnavailable)
from .files import atomic_write
from .options import INTERPOLATIONS, OPTIMIZERS, POOLINGS

__all__ = ["CHECKPOINT_FILE", "DEFAULTS", "SPEC_FILE", "SPEC_FORMAT", "WEIGHTS_FILE", "finetune",
           "FinetunedFolder", "FinetuneOptions", "is_finetuned", "make_net", "net_spec_for",
           "param_groups", "predictions", "read_checkpoint", "read_folder", "read_spec",
           "resized", "trace_units", "tuned_state_keys", "tuned_units"]

SPEC_FILE = "finetune.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
SPEC_FORMAT = 1


def _top_n(text: str) -> int | None:
    head, _, n = text.partition("-")
    return int(n) if head == "top" and n.isdigit() and int(n) >= 1 else None


@dataclass(frozen=True)
class FinetuneOptions:
    """Everything that changes the trained weights (the CLI's defaults are these)."""

    unfreeze: str = "top-2"
    lr: float = 1e-3
    lr_decay: float = 0.5
    epochs: int = 10
    augment: str | None = None
    val: float = 0.2
    seed: int = 0
    label_smoothing: float = 0.0
    class_balanced: bool = False
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of all steps
    patience: int = 3  # epochs without a better validation score before stopping; 0 = never
    batch_size: int = 32

    def __post_init__(self):
        if self.unfreeze not in ("all", "none") and not _top_n(self.unfreeze):
            raise UsageError(f"--unfreeze {self.unfreeze}: use top-N (N >= 1), all or none")
        checks = [(self.lr > 0, f"--lr must be positive, not {self.lr}"),
                  (0 < self.lr_decay <= 1, f"--lr-decay must be in (0, 1], not {self.lr_decay}"),
                  (self.epochs >= 1, f"--epochs must be at least 1, not {self.epochs}"),
                  (0 < self.val < 1, f"--val must be a fraction in (0, 1), not {self.val}"),
                  (0 <= self.label_smoothing < 1,
                   f"--label-smoothing must be in [0, 1), not {self.label_smoothing}"),
                  (self.weight_decay >= 0, f"--weight-decay must be >= 0, not {self.weight_decay}"),
                  (0 <= self.warmup < 1,
                   f"--warmup must be a fraction in [0, 1), not {self.warmup}"),
                  (self.patience >= 0, f"--patience must be >= 0, not {self.patience}"),
                  (self.batch_size >= 1, f"--batch-size must be at least 1, not {self.batch_size}")]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        OPTIMIZERS.check(self.optimizer)
        if self.augment is not None:
            from .augment import AugmentSpec

            object.__setattr__(self, "augment", str(AugmentSpec.parse(self.augment)))


DEFAULTS = FinetuneOptions()


def tuned_units(unfreeze: str, n_units: int) -> list[int]:
    """Indices (bottom = 0) of the units `unfreeze` trains."""
    if unfreeze == "none":
        return []
    n = n_units if unfreeze == "all" else _top_n(unfreeze)
    if n is None or n > n_units:
        raise UsageError(f"--unfreeze {unfreeze}: the network has {n_units} blocks up to the "
                         f"chosen layer; use top-1 ... top-{n_units}, all or none")
    return list(range(n_units - n, n_units))


# --------------------------------------------------------------------------------------------
# The network: the base read at one layer, pooled, and a new linear head


class _LayerReached(Exception):
    """Raised by the hook on the layer the head reads: nothing above it needs to run."""

    def __init__(self, x):
        super().__init__()
        self.x = x


def _stop_at_input(module, args):
    raise _LayerReached(args[0])


def _stop_at_output(module, args, output):
    raise _LayerReached(output)


@functools.cache
def _net_class():
    import torch

    from .backbone import pool_features

    class FinetunedNet(torch.nn.Module):
        """`body` (the base network) read at one module by a hook, pooled, then `head`.

        `frozen` names modules of the body that stay in eval mode in training (their BatchNorm
        statistics are not updated)."""

        def __init__(self, body, *, module: str, hook: str, pool: str | None, in_features: int,
                     classes: int):
            super().__init__()
            self.body, self.pool, self.module, self.hook = body, pool, module, hook
            self.head = torch.nn.Linear(in_features, classes)
            self.frozen: list[str] = []

        def forward(self, x):
            # the stopping hook is added last, at each call, so that hooks others put on the same
            # module (embedkit reading that layer, a shape probe) still run before it
            target = self.body.get_submodule(self.module)
            handle = (target.register_forward_pre_hook(_stop_at_input) if self.hook == "input"
                      else target.register_forward_hook(_stop_at_output))
            try:
                self.body(x)
            except _LayerReached as reached:
                x = reached.x
            else:
                raise RuntimeError("the layer the head reads never ran")
            finally:
                handle.remove()
            return self.head(pool_features(x, self.pool))

        def train(self, mode: bool = True):
            super().train(mode)
            for name in self.frozen:
                self.body.get_submodule(name).training = False
            return self

    return FinetunedNet


def net_spec_for(base, classes: list[str]) -> dict:
    """finetune.json's "net" for a head over `classes` on `base` (a TorchImageBackbone at its
    layer and pooling): the base's own classifier module (replaced), the module the head reads and
    how, its pooling and width, and the block modules up to it (the units fine-tuning can tune).
    Fine-tuning writes it and reading a folder back compares it, so the two cannot disagree."""
    info = base.layer_info()
    names = [n for n in base.layers()[1:] if n != "logits"]
    if base.layer != "pre_logits":
        names = names[:names.index(base.layer) + 1]
    reading = info[base.layer]
    return {"classifier": info["pre_logits"].module, "module": reading.module,
            "hook": reading.hook,
            "pool": None if base.layer == "pre_logits" else (base.pool or "avg"),
            "in_features": base.dim, "blocks": [info[n].module for n in names],
            "classes": list(classes)}


def make_net(body, net_spec: dict):
    """The fine-tuning network around `body` as `net_spec` (finetune.json's "net") describes it:
    the source classifier replaced by an identity (its weights are never used), a hook on the
    layer the head reads, a new head."""
    import torch

    body.set_submodule(net_spec["classifier"], torch.nn.Identity())
    return _net_class()(body, module=net_spec["module"], hook=net_spec["hook"],
                        pool=net_spec["pool"], in_features=net_spec["in_features"],
                        classes=len(net_spec["classes"]))


def _holders(body) -> dict:
    """Modules whose own tensors or behaviour count: leaves, and any module with parameters or
    buffers of its own (a ViT's class token)."""
    return {name: m for name, m in body.named_modules()
            if not any(True for _ in m.children())
            or any(True for _ in m.parameters(recurse=False))
            or any(True for _ in m.buffers(recurse=False))}


def trace_units(net, blocks: list[str], input_size: int) -> list[list[str]]:
    """The body's modules grouped into one unit per block, in the order one forward pass runs
    them: a unit holds what runs after the previous block's output, up to its own.  Modules that
    run after the last block (pooling) join the last unit; modules that never run (above the
    layer) belong to none."""
    import torch

    units: list[list[str]] = [[]]
    seen: set[str] = set()

    def enter(name):
        def hook(module, args):
            if name not in seen:
                seen.add(name)
                units[-1].append(name)
        return hook

    handles = [m.register_forward_pre_hook(enter(n)) for n, m in _holders(net.body).items()]
    handles += [net.body.get_submodule(b).register_forward_hook(lambda *a: units.append([]))
                for b in blocks]
    device = next(net.parameters()).device
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        for h in handles:
            h.remove()
    if len(units) > len(blocks):
        units[len(blocks) - 1] += [n for extra in units[len(blocks):] for n in extra]
    return units[:len(blocks)]


def _own_tensors(body, name: str, kind: str = "parameters"):
    module = body.get_submodule(name)
    prefix = f"body.{name}." if name else "body."
    return [(prefix + n, t) for n, t in getattr(module, f"named_{kind}")(recurse=False)]


def param_groups(net, units: list[list[str]], tuned: list[int], blocks: list[str], lr: float,
                 decay: float) -> list[dict]:
    """The head at `lr`, then one group per tuned unit from the top down, each `decay` times
    the rate of the one above it."""
    groups = [{"name": "head", "params": list(net.head.parameters()), "lr": lr}]
    for k, index in enumerate(reversed(tuned), 1):
        params = [p for name in units[index] for _, p in _own_tensors(net.body, name)]
        if params:
            groups.append({"name": blocks[index], "params": params, "lr": lr * decay ** k})
    return groups


def tuned_state_keys(net, units, tuned) -> list[str]:
    """State-dict keys that training can change: the head and the tuned units' parameters and
    buffers (BatchNorm statistics)."""
    keys = ["head.weight", "head.bias"]
    for index in tuned:
        for name in units[index]:
            keys += [k for k, _ in _own_tensors(net.body, name)]
            keys += [k for k, _ in _own_tensors(net.body, name, "buffers")]
    return keys


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then half a cosine down to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# --------------------------------------------------------------------------------------------
# Data


class _Images:
    """torch Dataset: (tensor, label index) per item; a bad image travels back as a message."""

    def __init__(self, items, targets, preprocess):
        self.items, self.targets, self.preprocess = items, targets, preprocess

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        try:
            return self.preprocess(self.items[i]), int(self.targets[i]), None
        except EmbedkitError as exc:
            return None, int(self.targets[i]), str(exc)


def _collate(samples):
    import torch

    for _, _, error in samples:
        if error:
            raise BadInputError(f"{error}; fix or remove it to fine-tune")
    return (torch.stack([x for x, _, _ in samples]),
            torch.tensor([y for _, y, _ in samples], dtype=torch.long))


def _loader(items, targets, preprocess, batch_size, order, workers):
    from torch.utils.data import DataLoader

    return DataLoader(_Images(items, targets, preprocess), batch_size=batch_size,
                      sampler=order, num_workers=workers, collate_fn=_collate)


def _data_hash(ids, labels) -> str:
    return hashlib.sha256(json.dumps([list(ids), list(labels)]).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# What is read back (finetune.json, the weights, a checkpoint) is checked before anything is
# built from it: one schema per JSON record, every field declared once with its type and range
# (the refusal is generated from the declaration), no field that is not declared; a safetensors
# file of the folder's own whose tensors are exactly the network's.  A file that fails is
# refused in one line naming it, the field and what to do: exit 5 (BadInputError) for a record,
# exit 4 (BadWeights) for a weights or checkpoint file that cannot be used.

_START_OVER = "delete it to start over"
#: Larger than any network's input side: a tampered size cannot make each image gigabytes.
_MAX_SIDE = 8192


def _again(folder) -> str:
    return f"fine-tune again (embedkit finetune DATA -o {folder})"


def _same_layout(value, like) -> bool:
    """Whether the JSON `value` is laid out as `like`: the same keys and list lengths, and a
    number, string, boolean or null where `like` has one."""
    if isinstance(like, dict):
        return (isinstance(value, dict) and value.keys() == like.keys()
                and all(_same_layout(value[k], like[k]) for k in like))
    if isinstance(like, (list, tuple)):
        return (isinstance(value, list) and len(value) == len(like)
                and all(map(_same_layout, value, like)))
    if like is None or isinstance(like, (bool, str)):
        return type(value) is type(like)
    return schema.NUMBER.test(value)


def _laid_out_like(like, words: str) -> schema.Rule:
    """JSON laid out as `like` (this run's own state, e.g. its optimizer's groups)."""
    return schema.Rule(words, lambda v: _same_layout(v, like))


_MODULE = schema.Rule("a dotted module name", lambda v: isinstance(v, str) and all(
    part.isidentifier() or part.isdigit() for part in v.split(".")))
_CLASSES = schema.Rule("a list of at least 2 distinct class names", lambda v: (
    schema.list_of(schema.text()).test(v) and len(v) >= 2 and len(set(v)) == len(v)))
_MEAN = schema.Rule("a list of 3 numbers", lambda v: (
    schema.list_of(schema.NUMBER).test(v) and len(v) == 3))
_STD = schema.Rule("a list of 3 positive numbers", lambda v: _MEAN.test(v) and min(v) > 0)
_POOL = schema.one_of(None, *POOLINGS)

#: finetune.json (`_Run.save` writes it)
_SPEC_SCHEMA = {
    "format": schema.one_of("embedkit-finetune"),
    "version": schema.integer(SPEC_FORMAT, SPEC_FORMAT),
    "embedkit": schema.text(),
    "base": {"model": schema.text(), "family": schema.text(), "fingerprint": schema.text(),
             "layer": schema.text(), "pool": _POOL},
    "net": {"classifier": _MODULE, "module": _MODULE, "hook": schema.one_of("input", "output"),
            "pool": _POOL, "in_features": schema.integer(1),
            "blocks": schema.list_of(_MODULE), "classes": _CLASSES},
    "preprocessing": {"input_size": schema.integer(32, _MAX_SIDE),
                      "resize_size": schema.integer(32, _MAX_SIDE), "mean": _MEAN, "std": _STD,
                      "interpolation": schema.one_of(*INTERPOLATIONS)},
    "task": schema.text(),
    "classes": _CLASSES,
    "training": schema.OBJECT,  # the record of the run: read by people, not by embedkit
}

#: one entry of a checkpoint's "history" (`_Run.fit` appends it), and its "best"
_EPOCH_FIELDS = {"epoch": schema.integer(1), "train_loss": schema.NUMBER,
                 "val_loss": schema.NUMBER, "val_accuracy": schema.NUMBER}
_EPOCH = schema.Rule("an epoch record of " + ", ".join(_EPOCH_FIELDS),
                     lambda v: schema.misfit(v, _EPOCH_FIELDS) is None)


def _own_file(path: Path, refused: type[EmbedkitError], then: str):
    """Refuse `path` unless it is a regular file inside its folder.  A link to another file of
    the folder is fine: the folder still holds everything it means, and moves and copies
    whole.  A link out of it is not: the folder would then stand for a file elsewhere that can
    change or go without it (or a device or pipe that never ends)."""
    real, folder = Path(os.path.realpath(path)), Path(os.path.realpath(path.parent))
    if folder not in real.parents:
        raise refused(f"{path}: refused: a link to {real}, outside the folder; put the file "
                      f"itself in its place, or {then}")
    if not real.is_file():  # also a link to a missing file, or a loop of links
        raise refused(f"{path}: refused: not a regular file; {then}")


@contextlib.contextmanager
def _safetensors(path: Path, then: str):
    """`path` open as a safetensors file, one of its folder's own: anything else (a pickle, a
    truncated or empty file) is refused, and nothing of it is interpreted but its header."""
    from safetensors import safe_open

    _own_file(path, BadWeights, then)
    try:
        with safe_open(str(path), "pt") as f:
            yield f
    except Exception as exc:  # noqa: BLE001 - SafetensorError (its only class) or OSError
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise BadWeights(f"{path}: refused: not a complete safetensors file ({reason}); "
                         f"{then}") from None


def _check_tensors(where, found: dict, expected: dict, then: str, optional=()):
    """Refuse (BadWeights) a file whose tensors (name -> layout) are not `expected` (name ->
    layout, None for any), leaving out only names in `optional`."""
    problems = [f"{k} is missing" for k in expected if k not in found and k not in optional]
    problems += [f"unexpected {k}" for k in found if k not in expected]
    problems += [f"{k} is {found[k]}, expected {expected[k]}" for k in found
                 if expected.get(k) is not None and found[k] != expected[k]]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise BadWeights(f"{where}: refused: its tensors do not fit the network "
                         f"({'; '.join(problems[:3])}{more}); {then}")


def _layout(tensor) -> str:
    return f"{str(tensor.dtype).removeprefix('torch.')} {list(tensor.shape)}"


# --------------------------------------------------------------------------------------------
# Checkpoints: one safetensors file per epoch, written atomically


def _write_safetensors(path: Path, tensors: dict, metadata: dict | None = None):
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
        metadata={"embedkit": json.dumps(metadata)} if metadata is not None else None))


def _write_json(path: Path, data: dict):
    atomic_write(path, json.dumps(data, indent=2))


def read_checkpoint(path: Path) -> tuple[dict, dict]:
    """(tensors, metadata) of a checkpoint file: a safetensors file of its folder's own (else
    BadWeights) whose metadata holds a JSON object (else BadInputError).  What they hold is
    checked against the run that resumes them (`_Run._restore`) before any of it is used."""
    path = Path(path)
    with _safetensors(path, _START_OVER) as f:
        record = (f.metadata() or {}).get("embedkit")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    try:
        meta = json.loads(record or "null")
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise BadInputError(f"{path}: not an embedkit fine-tuning checkpoint (no JSON record in "
                            f"its metadata); {_START_OVER}")
    return tensors, meta


#: the state AdamW and SGD keep per parameter, as `_optimizer_tensors` writes it ("step" is a
#: scalar, the others have the parameter's shape)
_OPTIMIZER_STATE = {"adamw": ("step", "exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",)}


def _optimizer_tensors(optimizer) -> tuple[dict, list[dict]]:
    state = optimizer.state_dict()
    tensors = {f"optim/{i}/{name}": v for i, s in state["state"].items()
               for name, v in s.items() if v is not None}
    groups = [{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]]
    return tensors, groups


def _restore_optimizer(optimizer, tensors: dict, groups: list[dict]):
    fresh = optimizer.state_dict()["param_groups"]
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": [
        {**saved, "params": f["params"]} for saved, f in zip(groups, fresh)]})


# --------------------------------------------------------------------------------------------
# Training


@dataclass
class _Plan:
    """What one fine-tuning run is: checked against a checkpoint before resuming it."""

    base_model: str
    base_fingerprint: str
    layer: str
    pool: str | None
    task: str
    classes: list[str]
    data: str  # hash of the item ids and labels
    options: dict


def finetune(dataset, model: str | None = None, output=None, *, layer: str | None = None,
             pool: str | None = None, weights: str | None = None, label: str | None = None,
             unfreeze: str = DEFAULTS.unfreeze, lr: float = DEFAULTS.lr,
             lr_decay: float = DEFAULTS.lr_decay, epochs: int = DEFAULTS.epochs,
             augment: str | None = DEFAULTS.augment, val: float = DEFAULTS.val,
             seed: int = DEFAULTS.seed, label_smoothing: float = DEFAULTS.label_smoothing,
             class_balanced: bool = DEFAULTS.class_balanced,
             optimizer: str = DEFAULTS.optimizer, weight_decay: float = DEFAULTS.weight_decay,
             warmup: float = DEFAULTS.warmup, patience: int = DEFAULTS.patience,
             batch_size: int = DEFAULTS.batch_size, input_size: int | None = None,
             device: str = "auto", workers: int | None = None, resume: bool = False,
             compare_probe: bool = False, probe: str = "logreg", cache=None,
             progress: bool | None = None):
    """Fine-tune the top of `model` on the labelled image `dataset`; save it to `output`.

    Args:
        dataset: a folder with class subfolders, a manifest, or a bundled sample name.
        model: the base backbone (default efficientnet_lite0); a torch image backbone.
        output: the folder to write (model.safetensors + finetune.json).
        layer: the layer the new linear head reads (default pre_logits; a block layer is
            pooled with `pool`, default avg).
        weights: an explicit weights file for the base model.
        label: the label column to learn (manifests with several).
        unfreeze: "top-N" units below the layer, "all" or "none" (the head alone).
        lr: the head's learning rate; lr_decay: factor per unit going down.
        epochs: at most this many passes over the training split.
        augment: an augmentation recipe (`embedkit.augment`, e.g. "crop=0.85,rotate=10"),
            applied on the fly; None trains on the images as they are.
        val: the stratified fraction held out to choose the best epoch and stop early.
        seed: every random draw (split, head initialisation, order, augmentation).
        label_smoothing: weight of the uniform target in the loss.
        class_balanced: weigh the loss of each class by its inverse frequency.
        optimizer: "adamw" or "sgd" (momentum 0.9, Nesterov); weight_decay for either.
        warmup: fraction of all steps of linear warm-up before the cosine decay.
        patience: stop after this many epochs without a better validation score (0: never).
        batch_size, device ("auto", "cpu", "cuda", ...), workers (image loading processes;
            default 0 on the CPU, 4 on a GPU).
        input_size: train (and later embed) at this square size instead of the weights' own,
            with the same crop ratio, mean, std and interpolation (small images need no
            224 px: 128 px has a third of the pixels).  The probe of `compare_probe` reads the
            same size.
        resume: continue the run whose checkpoint is in `output`.
        compare_probe: also train the frozen-feature linear classifier (`probe`, an
            `embedkit.classify` classifier) on the same split and record both accuracies.
        cache, progress: as for `embedkit.extract`.

    Returns the fine-tuned backbone (`create_backbone(output)`); its `training` attribute is the
    record written to finetune.json ("training").
    """
    from .backbone import TorchImageBackbone
    from .classify import check_options, holdout_split
    from .extract import pick_device
    from .inputs import open_dataset
    from .registry import chosen_model, create_backbone

    started = time.perf_counter()
    if output is None:
        raise UsageError("fine-tuning writes a backbone folder: give the output (-o OUT/)")
    options = FinetuneOptions(
        unfreeze=unfreeze, lr=lr, lr_decay=lr_decay, epochs=epochs, augment=augment, val=val,
        seed=seed, label_smoothing=label_smoothing, class_balanced=class_balanced,
        optimizer=optimizer, weight_decay=weight_decay, warmup=warmup, patience=patience,
        batch_size=batch_size)
    if compare_probe:
        check_options(probe)
    out = Path(output)
    _check_output(out, resume)
    # a checkpoint that is no safetensors file is refused before anything is built
    checkpoint = read_checkpoint(out / CHECKPOINT_FILE) if resume else None
    ds = open_dataset(dataset, label=label)
    if ds.modality != "image":
        raise UsageError(f"{ds.shown} holds {ds.modality}s; fine-tuning trains image networks")
    if not ds.label_names:
        raise UsageError(f"{ds.shown} has no labels; fine-tuning needs class subfolders or a "
                         "manifest label column")
    task = ds.label_names[0]
    items = [it for it in ds.items if it.error is None and it.labels.get(task) not in (None, "")]
    y = np.asarray([it.labels[task] for it in items], dtype=object)
    base = create_backbone(chosen_model(model, "image"), layer=layer, pool=pool,
                           weights=weights)
    if not isinstance(base, TorchImageBackbone):
        raise UsageError(f"{base.name} is not a torch image network; fine-tuning needs one "
                         "(efficientnet_lite*, torchvision or timm models)")
    if input_size is not None:
        base.preprocessing = resized(base.preprocessing, input_size)
    if base.layer == "logits":
        raise UsageError("the head reads features: choose pre_logits or a block layer, not "
                         "logits")
    if not base.source.available:
        raise WeightsUnavailable(f"no weights for {base.name} on this machine: "
                                 f"{base.source.hint}")
    train_rows, val_rows = holdout_split(y, options.val, options.seed, task)
    train_rows, val_rows = np.sort(train_rows), np.sort(val_rows)
    classes = sorted({str(v) for v in y})
    plan = _Plan(base.name, base.fingerprint(), base.layer, base.pool, task, classes,
                 _data_hash([it.id for it in items], [str(v) for v in y]), asdict(options))
    dev = pick_device(device)
    run = _Run(base, plan, options, dev, items, np.asarray([classes.index(str(v)) for v in y]),
               train_rows, val_rows, out, workers, progress)
    run.fit(checkpoint)
    record = run.save()
    record["train_seconds"] = round(time.perf_counter() - started, 1)  # this session's part
    if compare_probe:
        probe_started = time.perf_counter()
        record["probe"] = _probe_accuracy(ds, base, items, train_rows, val_rows, task, probe,
                                          options.seed, cache=cache, device=device,
                                          progress=progress, batch_size=options.batch_size)
        record["probe"]["seconds"] = round(time.perf_counter() - probe_started, 1)
    spec = json.loads((out / SPEC_FILE).read_text())
    spec["training"] = record
    _write_json(out / SPEC_FILE, spec)
    backbone = create_backbone(str(out))
    backbone.training = record
    return backbone


def resized(pre, input_size: int):
    """The same preprocessing at another input size (same crop ratio, mean, std,
    interpolation)."""
    from .backbone import ImagePreprocess

    if input_size < 32:
        raise UsageError(f"--input-size {input_size}: at least 32 px (the networks downsample "
                         "32 times)")
    return ImagePreprocess.from_crop_pct(input_size, pre.input_size / pre.resize_size,
                                         pre.mean, pre.std, pre.interpolation)


def _check_output(out: Path, resume: bool):
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder; -o takes a folder")
    done, started = (out / SPEC_FILE).is_file(), (out / CHECKPOINT_FILE).is_file()
    if done:
        raise UsageError(f"{out} already holds a fine-tuned backbone; choose another -o folder "
                         "or delete it")
    if started and not resume:
        raise UsageError(f"{out} holds the checkpoint of an unfinished run: continue it with "
                         "--resume, or delete the folder to start over")
    if resume and not started:
        raise NotFoundError(f"{out}: no checkpoint to resume ({CHECKPOINT_FILE}); run without "
                            "--resume to start")


class _Run:
    """One fine-tuning run: network, optimizer, schedule, the epoch loop and its checkpoints."""

    def __init__(self, base, plan: _Plan, options: FinetuneOptions, device, items, targets,
                 train_rows, val_rows, out: Path, workers, progress):
        import copy

        import torch

        self.base, self.plan, self.o, self.device = base, plan, options, device
        self.items, self.targets = items, targets
        self.train_rows, self.val_rows = train_rows, val_rows
        self.out, self.progress = out, progress
        self.workers = workers if workers is not None else (0 if device == "cpu" else 4)
        self.net_spec = net_spec_for(base, plan.classes)
        self.blocks = self.net_spec["blocks"]
        torch.manual_seed(options.seed)  # the head's initialisation
        self.net = make_net(copy.deepcopy(base.model).cpu(), self.net_spec)
        self.units = trace_units(self.net, self.blocks, base.preprocessing.input_size)
        self.tuned = tuned_units(options.unfreeze, len(self.units))
        tuned_names = {n for i in self.tuned for n in self.units[i]}
        self.net.frozen = [n for n in _holders(self.net.body) if n not in tuned_names]
        self.net.requires_grad_(False)
        groups = param_groups(self.net, self.units, self.tuned, self.blocks, options.lr,
                              options.lr_decay)
        for group in groups:
            for p in group["params"]:
                p.requires_grad_(True)
        self.tuned_keys = tuned_state_keys(self.net, self.units, self.tuned)
        self.net.to(device, memory_format=torch.channels_last)
        if options.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(groups, lr=options.lr,
                                               weight_decay=options.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(groups, lr=options.lr, momentum=0.9, nesterov=True,
                                             weight_decay=options.weight_decay)
        self.steps_per_epoch = math.ceil(len(train_rows) / options.batch_size)
        total = options.epochs * self.steps_per_epoch
        warm = max(1, round(options.warmup * total)) if options.warmup else 0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: _lr_factor(step, total, warm))
        counts = np.bincount(targets[train_rows], minlength=len(plan.classes))
        weight = None
        if options.class_balanced:
            weight = torch.tensor(len(train_rows) / (len(counts) * np.maximum(counts, 1)),
                                  dtype=torch.float32, device=device)
        self.criterion = torch.nn.CrossEntropyLoss(weight=weight,
                                                   label_smoothing=options.label_smoothing)
        self.epoch, self.history, self.best, self.stale = 0, [], None, 0
        self.best_state: dict | None = None

    # -- the loop ----------------------------------------------------------------------------
    def fit(self, checkpoint: tuple[dict, dict] | None):
        """Train from the start, or from `checkpoint` (`read_checkpoint`'s tensors and
        metadata), to the last epoch or an early stop."""
        for stray in self.out.glob(f".{CHECKPOINT_FILE}.*"):
            stray.unlink(missing_ok=True)  # left by a run killed while writing
        if checkpoint is not None:
            self._restore(*checkpoint)
        self.out.mkdir(parents=True, exist_ok=True)
        while self.epoch < self.o.epochs and not self._stopped():
            loss = self._train_epoch()
            accuracy, val_loss = self._validate()
            self.history.append({"epoch": self.epoch + 1, "train_loss": round(loss, 6),
                                 "val_loss": round(val_loss, 6),
                                 "val_accuracy": round(accuracy, 6)})
            if self.best is None or (accuracy, -val_loss) > (self.best["val_accuracy"],
                                                             -self.best["val_loss"]):
                self.best = self.history[-1]
                self.best_state = {k: v.detach().clone() for k, v in self._tuned_state().items()}
                self.stale = 0
            else:
                self.stale += 1
            self.epoch += 1
            self._checkpoint()

    def _stopped(self) -> bool:
        return bool(self.o.patience) and self.stale >= self.o.patience

    def _preprocess(self):
        if not self.o.augment:
            return self.base.preprocess
        from .augment import AugmentedBackbone

        # view epoch + 1: a deterministic function of the pixels, the seed and the epoch
        return AugmentedBackbone(self.base, self.o.augment, view=self.epoch + 1,
                                 seed=self.o.seed).preprocess

    def _train_epoch(self) -> float:
        import torch

        from .extract import _progress

        order = torch.randperm(len(self.train_rows), generator=torch.Generator().manual_seed(
            self.o.seed * 1_000_003 + self.epoch)).tolist()
        loader = _loader([self.items[i] for i in self.train_rows],
                         self.targets[self.train_rows], self._preprocess(), self.o.batch_size,
                         order, self.workers)
        self.net.train()
        bar = _progress(self.steps_per_epoch, self.progress, "batch")
        bar.set_description(f"epoch {self.epoch + 1}/{self.o.epochs}")
        total, seen = 0.0, 0
        try:
            for x, y in loader:
                x, y = self._to_device(x, y)
                with self._autocast():
                    logits = self.net(x)
                loss = self.criterion(logits.float(), y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                total, seen = total + float(loss.detach()) * len(y), seen + len(y)
                postfix = {"loss": f"{total / seen:.4f}"}
                if self.history:
                    postfix["val_acc"] = f"{self.history[-1]['val_accuracy']:.3f}"
                bar.set_postfix(postfix)
                bar.update(1)
        finally:
            bar.close()
        return total / max(seen, 1)

    def _validate(self) -> tuple[float, float]:
        import torch

        loader = _loader([self.items[i] for i in self.val_rows], self.targets[self.val_rows],
                         self.base.preprocess, self.o.batch_size, None, self.workers)
        self.net.eval()
        correct, loss, n = 0, 0.0, 0
        with torch.no_grad():
            for x, y in loader:
                x, y = self._to_device(x, y)
                with self._autocast():
                    logits = self.net(x).float()
                loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                n += len(y)
        return correct / n, loss / n

    def _to_device(self, x, y):
        import torch

        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def _autocast(self):
        """bfloat16 mixed precision on a GPU (no loss scaling needed); full precision on CPU."""
        import torch

        kind = torch.device(self.device).type
        return torch.autocast(device_type=kind, dtype=torch.bfloat16, enabled=kind == "cuda")

    def _tuned_state(self) -> dict:
        state = self.net.state_dict()
        return {k: state[k] for k in self.tuned_keys}

    # -- checkpoints -------------------------------------------------------------------------
    def _checkpoint(self):
        import torch

        tensors = {f"net/{k}": v for k, v in self._tuned_state().items()}
        tensors.update({f"best/{k}": v for k, v in self.best_state.items()})
        optim_tensors, groups = _optimizer_tensors(self.optimizer)
        tensors.update(optim_tensors)
        tensors["rng/torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors["rng/cuda"] = torch.cuda.get_rng_state()
        meta = {"plan": asdict(self.plan), "epoch": self.epoch, "history": self.history,
                "best": self.best, "stale": self.stale, "param_groups": groups,
                "scheduler": self.scheduler.state_dict()}
        _write_safetensors(self.out / CHECKPOINT_FILE, tensors, meta)

    def _restore(self, tensors: dict, meta: dict):
        """Continue from a checkpoint once its metadata follows this run's schema, its plan is
        this run's, and its tensors are this run's (nothing of it is used before)."""
        import torch

        path = self.out / CHECKPOINT_FILE
        schema.check(meta, self._checkpoint_schema(), path, _START_OVER)
        saved, mine = meta["plan"], asdict(self.plan)
        changed = [k for k in mine if k != "options" and saved[k] != mine[k]]
        changed += [f"--{k.replace('_', '-')}" for k, v in mine["options"].items()
                    if saved["options"].get(k) != v]
        if changed:
            raise UsageError(f"{self.out}: the checkpoint was made with other settings "
                             f"({', '.join(changed)} differ); resume with the same command, or "
                             "delete the folder to start over")
        expected, optional = self._checkpoint_tensors(tensors)
        _check_tensors(path, {k: _layout(v) for k, v in tensors.items()}, expected, _START_OVER,
                       optional)
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net/")},
                                 strict=False)
        self.best_state = {k[5:]: v.to(self.device) for k, v in tensors.items()
                           if k.startswith("best/")}
        _restore_optimizer(self.optimizer, tensors, meta["param_groups"])
        self.scheduler.load_state_dict(meta["scheduler"])
        torch.set_rng_state(tensors["rng/torch"])
        if "rng/cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng/cuda"])
        self.epoch, self.history = meta["epoch"], meta["history"]
        self.best, self.stale = meta["best"], meta["stale"]

    def _checkpoint_schema(self) -> dict:
        """The metadata `_checkpoint` writes for this run, each field's type and range; the
        optimizer's groups and the schedule laid out as this run's own."""
        return {"plan": {**{f.name: schema.ANY for f in fields(_Plan)},
                         "options": schema.OBJECT},
                "epoch": schema.integer(1), "history": schema.list_of(_EPOCH), "best": _EPOCH,
                "stale": schema.integer(0),
                "param_groups": _laid_out_like(_optimizer_tensors(self.optimizer)[1],
                                               "this run's optimizer groups"),
                "scheduler": _laid_out_like(self.scheduler.state_dict(),
                                            "this run's learning-rate schedule")}

    def _checkpoint_tensors(self, found: dict) -> tuple[dict, set]:
        """(the tensors of this run's checkpoints, name -> layout; those that may be absent):
        the tuned state now and at the best epoch and the random state are always there; the
        optimizer's state of a parameter is there whole or not at all (a parameter without a
        gradient yet has none), the CUDA random state where the run had a GPU (any layout)."""
        import torch

        tuned = {k: _layout(v) for k, v in self._tuned_state().items()}
        expected = {**{f"net/{k}": v for k, v in tuned.items()},
                    **{f"best/{k}": v for k, v in tuned.items()},
                    "rng/torch": _layout(torch.get_rng_state()),
                    "rng/cuda": (_layout(torch.cuda.get_rng_state())
                                 if torch.cuda.is_available() else None)}
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        state = {f"optim/{i}/{name}": _layout(torch.tensor(0.0) if name == "step" else p)
                 for i, p in enumerate(params) for name in _OPTIMIZER_STATE[self.o.optimizer]}
        started = {k.rsplit("/", 1)[0] for k in found if k.startswith("optim/")}
        optional = {"rng/cuda"} | {k for k in state if k.rsplit("/", 1)[0] not in started}
        return {**expected, **state}, optional

    # -- the result --------------------------------------------------------------------------
    def save(self) -> dict:
        """Write the best epoch's network and the spec; remove the checkpoint."""
        from . import __version__

        self.net.load_state_dict(self.best_state, strict=False)
        _write_safetensors(self.out / WEIGHTS_FILE, self.net.state_dict())
        record = {**self.plan.options, "device": self.device,
                  "items": {"train": int(len(self.train_rows)), "val": int(len(self.val_rows))},
                  "blocks": len(self.units),
                  "tuned_blocks": [self.blocks[i] for i in self.tuned],
                  "param_groups": [{"name": g["name"], "lr": g["initial_lr"]}
                                   for g in self.optimizer.param_groups],
                  "epochs_run": self.epoch, "stopped_early": self.epoch < self.o.epochs,
                  "best_epoch": self.best["epoch"], "val_accuracy": self.best["val_accuracy"],
                  "history": self.history}
        spec = {"format": "embedkit-finetune", "version": SPEC_FORMAT, "embedkit": __version__,
                "base": {"model": self.plan.base_model, "family": self.base.family,
                         "fingerprint": self.plan.base_fingerprint, "layer": self.plan.layer,
                         "pool": self.plan.pool},
                "net": self.net_spec, "preprocessing": asdict(self.base.preprocessing),
                "task": self.plan.task, "classes": self.plan.classes, "training": record}
        _write_json(self.out / SPEC_FILE, spec)
        (self.out / CHECKPOINT_FILE).unlink(missing_ok=True)
        return record


def _probe_accuracy(ds, base, items, train_rows, val_rows, task, classifier, seed,
                    **extract_options) -> dict:
    """The frozen-feature linear classifier on the same split: base features at the same layer
    (through the cache), `embedkit.classify.train` on the training rows, scored on the
    validation rows."""
    from .classify import train
    from .extract import extract

    features = extract(ds, base, **extract_options)
    row = {i: n for n, i in enumerate(features.ids)}
    train_es = features.subset([row[items[i].id] for i in train_rows])
    val_es = features.subset([row[items[i].id] for i in val_rows])
    smallest = int(np.unique(train_es.label_columns[task].astype(str), return_counts=True)[1].min())
    if smallest < 2:
        return {"classifier": classifier, "skipped": "a class has a single training item"}
    cv = min(5, smallest)
    trained = train(train_es, classifier, tasks=[task], cv=cv, seed=seed)
    report = trained.evaluate(val_es)[task]
    return {"classifier": classifier, "cv": cv,
            "best_params": trained.info["tasks"][task]["best_params"],
            "val_accuracy": round(float(report["accuracy"]), 6),
            "val_balanced_accuracy": round(float(report["balanced_accuracy"]), 6)}


# --------------------------------------------------------------------------------------------
# Using the result


def read_spec(folder) -> dict:
    """finetune.json of a fine-tuned folder, held to its schema (`_SPEC_SCHEMA`): a file that is
    not what `embedkit finetune` writes is refused in one line (exit 5) naming the field."""
    path = Path(folder) / SPEC_FILE
    if not os.path.lexists(path):
        raise NotFoundError(f"{folder}: not a fine-tuned backbone (no {SPEC_FILE})")
    _own_file(path, BadInputError, _again(folder))
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: unreadable ({exc})") from None
    if not isinstance(spec, dict) or spec.get("format") != "embedkit-finetune":
        raise BadInputError(f"{path}: not an embedkit fine-tuning spec")
    if spec.get("version") != SPEC_FORMAT:
        raise BadInputError(f"{path}: spec version {spec.get('version')}, this embedkit reads "
                            f"{SPEC_FORMAT}; fine-tune again with this version")
    schema.check(spec, _SPEC_SCHEMA, path, _again(folder))
    return spec


@dataclass(frozen=True)
class FinetunedFolder:
    """A fine-tuned folder read back and checked before anything is built from it (`read_folder`):
    its spec, its base backbone at the folder's layer, pooling and preprocessing (the
    architecture: the base's weights are never read), and the shape of every tensor in its
    weights file's header (None: the folder has no weights file)."""

    path: Path
    spec: dict
    base: Any
    shapes: dict[str, list[int]] | None

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS_FILE

    def load_weights(self, net):
        """Load the weights into `net` (built from this folder, its own tensors not yet
        loaded) once the file's tensor names and shapes are exactly the net's."""
        from .backbone import load_state_dict_file

        expected = {k: list(v.shape) for k, v in net.state_dict().items()}
        _check_tensors(self.weights, self.shapes, expected, _again(self.path))
        net.load_state_dict(load_state_dict_file(str(self.weights)))


def read_folder(folder) -> FinetunedFolder:
    """A fine-tuned folder, every file checked before anything is built from it: finetune.json
    (`read_spec`), the base it names (`_base_of`), and the weights: a complete safetensors file
    of the folder's own (the tensors it holds are compared with the network before they load)."""
    folder = Path(folder)
    spec = read_spec(folder)
    base = _base_of(spec, folder / SPEC_FILE, _again(folder))
    shapes = None
    if os.path.lexists(folder / WEIGHTS_FILE):
        with _safetensors(folder / WEIGHTS_FILE, _again(folder)) as f:
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    return FinetunedFolder(folder, spec, base, shapes)


def _base_of(spec: dict, where: Path, then: str):
    """The base backbone a spec names, at its layer, pooling and preprocessing; refused unless
    it is a torch image network and the spec's "net" is what fine-tuning it writes
    (`net_spec_for`): the head replaces the base's own classifier module and reads the base's
    own block, never any other attribute."""
    from .backbone import ImagePreprocess, TorchImageBackbone
    from .registry import create_backbone

    recorded = spec["base"]
    try:
        base = create_backbone(recorded["model"])
        if isinstance(base, TorchImageBackbone):
            base = create_backbone(recorded["model"], layer=recorded["layer"],
                                   pool=recorded["pool"])
    except UsageError as exc:  # a layer and pooling that do not go together: the record's
        raise BadInputError(f"{where}: base: {exc}; {then}") from None  # fault, not an option
    except EmbedkitError as exc:  # an unknown model or layer keeps its exit code (3, or 7)
        exc.args = (f"{where}: base: {exc}",)
        raise
    if not isinstance(base, TorchImageBackbone):
        raise BadInputError(f"{where}: 'base.model' is {schema.shown(recorded['model'])}, a "
                            f"{base.modality} model, not a torch image network; {then}")
    pre = spec["preprocessing"]
    base.preprocessing = ImagePreprocess(**{**pre, "mean": tuple(pre["mean"]),
                                            "std": tuple(pre["std"])})
    for key, value in net_spec_for(base, spec["classes"]).items():
        if spec["net"][key] != value:
            raise BadInputError(
                f"{where}: 'net.{key}' is {schema.shown(spec['net'][key])}, but "
                f"{recorded['model']} fine-tuned at layer {base.layer} has {schema.shown(value)}; "
                f"{then}")
    return base


def is_finetuned(path) -> bool:
    return os.path.isfile(os.path.join(str(path), SPEC_FILE))


def predictions(folder, inputs, **extract_options) -> tuple[list[dict], object]:
    """The fine-tuned head's own predictions for `inputs`: (rows, the logits EmbeddingSet).
    One row per item: id, the predicted class, and `p(TASK=CLASS)` (softmax of the logits)."""
    from .extract import extract
    from .registry import create_backbone

    spec = read_spec(folder)
    logits = extract(inputs, create_backbone(str(folder), layer="logits"), **extract_options)
    z = logits.vectors.astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    task, classes = spec["task"], spec["classes"]
    rows = []
    for item_id, probs in zip(logits.ids, p):
        row = {"id": item_id, task: classes[int(probs.argmax())]}
        row.update({f"p({task}={c})": round(float(v), 6) for c, v in zip(classes, probs)})
        rows.append(row)
    return rows, logits
