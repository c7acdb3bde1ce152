"""A fine-tuned folder (`embedkit finetune -o ft/`) changed after embedkit wrote it is refused in
one line with its documented exit code (finetune.json before any network is built from it, the
weights before they load): every tampering of issue 19 through the command that met it
(`extract --model ft/`, `predict ft/`, `finetune --resume`), and a few more; the untampered
folder, its checkpoint and a link inside the folder still work.

Exit codes (README, "Exit codes"): 4 for a weights file that cannot be used (model.safetensors or
checkpoint.safetensors: not a safetensors file, truncated, the wrong tensors, or a link out of
the folder), 5 for a malformed record (finetune.json, or the checkpoint's JSON metadata)."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from embedkit import samples
from embedkit.cli.main import cli
from embedkit.finetune import CHECKPOINT_FILE, SPEC_FILE, WEIGHTS_FILE, _Run
from embedkit.registry import create_backbone
from one_line_error import assert_one_line_error

# the smallest run that still makes a real folder: 10 digits, 1 epoch, 32 px, the top unit
TRAIN = ("--unfreeze", "top-1", "--epochs", "1", "-b", "8", "--input-size", "32", "--val",
         "0.5", "-q")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(dataset, fine-tuned folder, the checkpoint its run wrote before saving): one tiny run.
    The checkpoint is copied aside as the run saves, which deletes it."""
    root = tmp_path_factory.mktemp("ft-trust")
    data = samples.export("digits-target", root / "digits", per_class=2)
    kept = root / "kept-checkpoint.safetensors"
    save = _Run.save

    def save_keeping_the_checkpoint(run):
        shutil.copy(run.out / CHECKPOINT_FILE, kept)
        return save(run)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_Run, "save", save_keeping_the_checkpoint)
        result = invoke("finetune", data, *TRAIN, "-o", root / "ft", "--cache", root / "cache")
    assert result.exit_code == 0, result.output
    return data, root / "ft", kept


# -- tamperings: each takes the copied folder (and the place next to it) -----------------------

def spec_edit(change):
    def tamper(folder):
        spec = json.loads((folder / SPEC_FILE).read_text())
        change(spec)
        (folder / SPEC_FILE).write_text(json.dumps(spec))
    return tamper


def truncated(folder):
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[:len(data) // 2])


def emptied(folder):
    (folder / WEIGHTS_FILE).write_bytes(b"")


class _Exploit:
    """Unpickling this runs code: it would create the file named `marker`."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled(name):
    def tamper(folder):
        _Exploit.marker = str(folder.parent / "code-ran")
        (folder / name).write_bytes(pickle.dumps({"head.weight": _Exploit()}))
    return tamper


def linked_out(folder):
    outside = folder.parent / "elsewhere.bin"
    outside.write_bytes(b"\x89PNG not weights at all")
    (folder / WEIGHTS_FILE).unlink()
    (folder / WEIGHTS_FILE).symlink_to(outside)


def weights_for_other_classes(folder):
    tensors = load_file(str(folder / WEIGHTS_FILE))
    tensors.update({"head.weight": torch.zeros(3, 1280), "head.bias": torch.zeros(3)})
    save_file(tensors, str(folder / WEIGHTS_FILE))


def checkpoint_edit(change_tensors=None, change_meta=None):
    def tamper(folder):
        path = folder / CHECKPOINT_FILE
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["embedkit"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if change_tensors:
            change_tensors(tensors)
        if change_meta:
            change_meta(meta)
        save_file(tensors, str(path), metadata={"embedkit": json.dumps(meta)})
    return tamper


def drop_net_tensor(tensors):
    del tensors[next(k for k in tensors if k.startswith("net/"))]


def misshape_net_tensor(tensors):
    tensors["net/head.weight"] = torch.zeros(3, 7)


EXTRACT, PREDICT, RESUME = "extract", "predict", "resume"

CASES = {
    # (command, tampering, exit code, what the message names)
    "weights truncated": (EXTRACT, truncated, 4, WEIGHTS_FILE),
    "weights empty": (PREDICT, emptied, 4, WEIGHTS_FILE),
    "weights pickled": (EXTRACT, pickled(WEIGHTS_FILE), 4, WEIGHTS_FILE),
    "weights pickled, predict": (PREDICT, pickled(WEIGHTS_FILE), 4, WEIGHTS_FILE),
    "weights a link out of the folder": (EXTRACT, linked_out, 4, "outside"),
    "weights of a head for other classes": (PREDICT, weights_for_other_classes, 4,
                                            "head.weight is [3, 1280], expected [5, 1280]"),
    "no net": (EXTRACT, spec_edit(lambda s: s.pop("net")), 5, "'net' is missing"),
    "no preprocessing": (PREDICT, spec_edit(lambda s: s.pop("preprocessing")), 5,
                         "'preprocessing' is missing"),
    "base a string": (EXTRACT, spec_edit(lambda s: s.update(base="x")), 5,
                      "'base' is \"x\", expected an object"),
    "base a text model": (PREDICT, spec_edit(lambda s: s["base"].update(model="glove-6b-50d")),
                          5, "base.model"),
    "classes a number": (EXTRACT, spec_edit(lambda s: s["net"].update(classes=5)), 5,
                         "net.classes"),
    "classifier an arbitrary attribute": (
        EXTRACT, spec_edit(lambda s: s["net"].update(classifier="__class__")), 5,
        "net.classifier"),
    "in_features negative": (PREDICT, spec_edit(lambda s: s["net"].update(in_features=-1)), 5,
                             "net.in_features"),
    "input_size a string": (
        EXTRACT, spec_edit(lambda s: s["preprocessing"].update(input_size="x")), 5,
        "preprocessing.input_size"),
    "an extra preprocessing key": (
        PREDICT, spec_edit(lambda s: s["preprocessing"].update(sharpen=2)), 5,
        "preprocessing.sharpen"),
    "an extra top-level key": (EXTRACT, spec_edit(lambda s: s.update(run="rm -rf /")), 5,
                               "'run'"),
    "head reads another module": (
        PREDICT, spec_edit(lambda s: s["net"].update(module="blocks.99")), 5, "net.module"),
    "hook neither input nor output": (
        EXTRACT, spec_edit(lambda s: s["net"].update(hook="sideways")), 5, "net.hook"),
    "base layer and pooling that do not go together": (
        EXTRACT, spec_edit(lambda s: s["base"].update(layer="pre_logits", pool="flatten")), 5,
        "base"),
    "checkpoint pickled": (RESUME, pickled(CHECKPOINT_FILE), 4, CHECKPOINT_FILE),
    "checkpoint without a tuned tensor": (RESUME, checkpoint_edit(drop_net_tensor), 4,
                                          "is missing"),
    "checkpoint tensor of another shape": (RESUME, checkpoint_edit(misshape_net_tensor), 4,
                                           "net/head.weight"),
    "checkpoint epoch a string": (
        RESUME, checkpoint_edit(change_meta=lambda m: m.update(epoch="x")), 5, "epoch"),
}


def run_command(command, data, folder, tmp_path):
    cache = tmp_path / "cache"
    if command == EXTRACT:
        return invoke("extract", data, "--model", folder, "-q", "-o", tmp_path / "f.parquet",
                      "--cache", cache)
    if command == PREDICT:
        return invoke("predict", folder, data, "--json", "-q", "--cache", cache)
    return invoke("finetune", data, *TRAIN, "-o", folder, "--resume", "--cache", cache)


def copied(made, command, tmp_path):
    """A copy of the fine-tuned folder, or for a resume the folder of an unfinished run: the
    kept checkpoint alone."""
    _, ft, kept = made
    folder = tmp_path / "ft"
    if command == RESUME:
        folder.mkdir(parents=True)
        shutil.copy(kept, folder / CHECKPOINT_FILE)
    else:
        shutil.copytree(ft, folder)
    return folder


@pytest.mark.parametrize("case", list(CASES))
def test_a_tampered_folder_is_refused_in_one_line(made, tmp_path, case):
    command, tamper, code, named = CASES[case]
    folder = copied(made, command, tmp_path)
    tamper(folder)
    result = run_command(command, made[0], folder, tmp_path)
    assert_one_line_error(result, code, str(folder), named)
    assert not (tmp_path / "code-ran").exists()


def test_the_untampered_folder_its_checkpoint_and_a_link_inside_it_still_work(made, tmp_path):
    data, ft, _ = made
    rows = json.loads(run_command(PREDICT, data, ft, tmp_path).stdout)
    assert len(rows) == 10 and {r["label"] for r in rows} <= set("56789")

    folder = copied(made, EXTRACT, tmp_path)
    os.rename(folder / WEIGHTS_FILE, folder / "weights.safetensors")
    (folder / WEIGHTS_FILE).symlink_to("weights.safetensors")  # relative, inside the folder
    linked = create_backbone(str(folder))
    assert linked.fingerprint() == create_backbone(str(ft)).fingerprint()
    assert linked.model is not None  # its weights pass the check against the network and load

    resumed = copied(made, RESUME, tmp_path / "resume")
    result = run_command(RESUME, data, resumed, tmp_path)
    assert result.exit_code == 0, result.output
    assert (resumed / SPEC_FILE).is_file() and not (resumed / CHECKPOINT_FILE).exists()
