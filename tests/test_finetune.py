"""Fine-tuning EfficientNet-Lite0 on 20 real digit images (digits 5-9, 4 per class), 1-3 epochs:
frozen weights and BatchNorm statistics stay bit for bit, parameter groups carry the rates asked
for, the saved folder is a backbone whose vectors match plain timm with the saved weights, resume
after a real SIGKILL ends where an uninterrupted run ends, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from embedkit.classify import holdout_split
from embedkit.cli.main import cli
from embedkit.errors import UsageError
from embedkit.finetune import (CHECKPOINT_FILE, SPEC_FILE, WEIGHTS_FILE, finetune, make_net,
                               param_groups, read_checkpoint, resized, trace_units,
                               tuned_units)
from embedkit.inputs import open_dataset
from embedkit.registry import create_backbone
from hung import wait_until

SIZE = 64  # px: 12x fewer pixels than Lite0's 224, plenty for 8x8 digits
FAST = dict(batch_size=8, epochs=2, input_size=SIZE, progress=False)


@pytest.fixture(scope="module")
def tuned(digits_small, tmp_path_factory):
    """top-2 of Lite0 (blocks.6 and conv_head + bn2) tuned for 2 epochs, augmented on the fly."""
    out = tmp_path_factory.mktemp("ft") / "lite0-digits"
    backbone = finetune(digits_small, "efficientnet_lite0", out, unfreeze="top-2", lr=1e-2,
                        lr_decay=0.5, augment="crop=0.85,rotate=10", label_smoothing=0.1,
                        **FAST)
    return out, backbone


def _base_state():
    return create_backbone("efficientnet_lite0").model.state_dict()


# Lite0's top-2 units: the last stage, and conv_head with bn2 (what runs after the last stage)
TOP2 = ("blocks.6.", "conv_head.", "bn2.")


def test_frozen_weights_and_batchnorm_statistics_are_unchanged_bit_for_bit(tuned):
    out, _ = tuned
    saved = load_file(str(out / WEIGHTS_FILE))
    base = _base_state()
    body = {k[len("body."):]: v for k, v in saved.items() if k.startswith("body.")}
    assert set(body) == {k for k in base if not k.startswith("classifier.")}
    frozen = [k for k in body if not k.startswith(TOP2)]
    assert any("running_mean" in k for k in frozen) and any("num_batches_tracked" in k
                                                            for k in frozen)
    changed_frozen = [k for k in frozen if not torch.equal(body[k], base[k])]
    assert changed_frozen == []
    # ... and the tuned part did learn, BatchNorm statistics included
    for key in ("conv_head.weight", "blocks.6.0.conv_pwl.weight", "bn2.running_mean",
                "blocks.6.0.bn1.running_var"):
        assert not torch.equal(body[key], base[key]), key
    assert saved["head.weight"].shape == (5, 1280)


def test_units_follow_the_forward_pass_and_groups_carry_the_rates(lite0):
    import copy

    spec = {"classifier": "classifier", "module": "classifier", "hook": "input", "pool": None,
            "in_features": 1280, "classes": list("abc")}
    net = make_net(copy.deepcopy(lite0.model), spec)
    blocks = [f"blocks.{i}" for i in range(7)] + ["bn2"]
    units = trace_units(net, blocks, SIZE)
    assert len(units) == 8
    assert units[0][:2] == ["conv_stem", "bn1"] and units[0][-1].startswith("blocks.0.")
    assert units[-1][:2] == ["conv_head", "bn2"]
    assert all(n.startswith("blocks.3.") for n in units[3])
    assert tuned_units("top-3", 8) == [5, 6, 7] and tuned_units("none", 8) == []
    assert tuned_units("all", 8) == list(range(8))
    with pytest.raises(UsageError, match="top-1 ... top-8"):
        tuned_units("top-9", 8)

    # a head over a block layer: the units stop there, and nothing above it runs
    low = make_net(copy.deepcopy(lite0.model), {**spec, "module": "blocks.4", "hook": "output",
                                                "pool": "avg", "in_features": 112})
    low_units = trace_units(low, blocks[:5], SIZE)
    assert len(low_units) == 5 and all(n.startswith("blocks.4.") for n in low_units[-1])
    assert low(torch.zeros(2, 3, SIZE, SIZE)).shape == (2, 3)

    groups = param_groups(net, units, [5, 6, 7], blocks, lr=0.02, decay=0.3)
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("head", 0.02), ("bn2", 0.02 * 0.3), ("blocks.6", 0.02 * 0.3 ** 2),
        ("blocks.5", 0.02 * 0.3 ** 3)]
    names = {id(p): n for n, p in net.named_parameters()}
    expected = {"head": ("head.",), "bn2": ("body.conv_head.", "body.bn2."),
                "blocks.6": ("body.blocks.6.",), "blocks.5": ("body.blocks.5.",)}
    for g in groups:
        got = sorted(names[id(p)] for p in g["params"])
        want = sorted(n for n, _ in net.named_parameters() if n.startswith(expected[g["name"]]))
        assert got == want, g["name"]


def test_the_run_records_the_rates_it_trained_with(tuned):
    _, backbone = tuned
    t = backbone.training
    assert t["param_groups"] == [{"name": "head", "lr": 1e-2}, {"name": "bn2", "lr": 5e-3},
                                 {"name": "blocks.6", "lr": 2.5e-3}]
    assert t["tuned_blocks"] == ["blocks.6", "bn2"] and t["blocks"] == 8
    assert t["items"] == {"train": 15, "val": 5} and len(t["history"]) == t["epochs_run"] == 2


def _reference_features(out, paths):
    """Plain timm with the saved weights: forward_features + pooled pre-logits, then the head."""
    import timm

    from embedkit.backbone import ImagePreprocess
    from embedkit.inputs import load_image

    saved = load_file(str(out / WEIGHTS_FILE))
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    model.load_state_dict({k[5:]: v for k, v in saved.items() if k.startswith("body.")})
    model.eval()
    # Lite0's own preprocessing (mean = std = 0.5, bicubic, crop 0.875) at SIZE px
    pre = ImagePreprocess.from_crop_pct(SIZE, 0.875, (0.5,) * 3, (0.5,) * 3, "bicubic")
    x = torch.stack([pre(load_image(p)) for p in paths])
    with torch.no_grad():
        feats = model(x).double().numpy()
    logits = feats @ saved["head.weight"].double().numpy().T + saved["head.bias"].double().numpy()
    return feats, logits


def test_the_saved_folder_is_a_backbone_with_the_same_vectors(tuned, digits_small, store):
    import embedkit

    out, backbone = tuned
    ds = open_dataset(digits_small)
    paths = [it.path for it in ds.items]
    fresh = create_backbone(str(out))
    es = embedkit.extract(digits_small, fresh, cache=store, progress=False)
    ref_feats, ref_logits = _reference_features(out, paths)
    np.testing.assert_allclose(es.vectors, ref_feats, rtol=1e-4, atol=1e-4)
    logits = embedkit.extract(digits_small, str(out), layer="logits", cache=store,
                              progress=False)
    np.testing.assert_allclose(logits.vectors, ref_logits, rtol=1e-4, atol=1e-4)
    assert fresh.fingerprint() == backbone.fingerprint()
    assert fresh.class_names == ["5", "6", "7", "8", "9"]
    # the best epoch is what was saved: its held-out accuracy is reproduced by the reloaded head
    y = np.asarray([it.labels["label"] for it in ds.items], dtype=object)
    _, val_rows = holdout_split(y, 0.2, 0, "label")
    predicted = np.asarray(fresh.class_names)[logits.vectors[val_rows].argmax(1)]
    assert np.mean(predicted == y[val_rows]) == pytest.approx(backbone.training["val_accuracy"])


def test_its_fingerprint_is_its_own_and_does_not_depend_on_the_folder(tuned, lite0, tmp_path):
    import shutil

    out, backbone = tuned
    spec = json.loads((out / SPEC_FILE).read_text())
    base = create_backbone("efficientnet_lite0")
    base.preprocessing = resized(base.preprocessing, SIZE)  # the base as training read it
    assert spec["base"]["fingerprint"] == base.fingerprint() != lite0.fingerprint()
    assert backbone.fingerprint() not in (base.fingerprint(), lite0.fingerprint())
    assert create_backbone(str(out), layer="logits").fingerprint() != backbone.fingerprint()
    moved = shutil.copytree(out, tmp_path / "moved")
    assert create_backbone(str(moved)).fingerprint() == backbone.fingerprint()
    saved = load_file(str(out / WEIGHTS_FILE))
    saved["head.bias"] = saved["head.bias"] + 1
    from safetensors.torch import save_file

    save_file(saved, str(moved / WEIGHTS_FILE))
    assert create_backbone(str(moved)).fingerprint() != backbone.fingerprint()


RESUMABLE = dict(unfreeze="top-1", lr=1e-2, epochs=2, batch_size=8, patience=0,
                 augment="crop=0.9", seed=3, input_size=SIZE)


def test_resume_after_sigkill_ends_where_an_uninterrupted_run_ends(digits_small, tmp_path):
    killed = tmp_path / "killed"
    code = ("import embedkit; embedkit.finetune(%r, 'efficientnet_lite0', %r, progress=False, "
            "**%r)" % (str(digits_small), str(killed), RESUMABLE))
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = killed / CHECKPOINT_FILE
    wait_until(lambda: checkpoint.exists() or proc.poll() is not None, "the first checkpoint")
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert not (killed / SPEC_FILE).exists()
    read_checkpoint(checkpoint)  # what the run kept is a whole checkpoint, wherever it died

    with pytest.raises(UsageError, match="--resume"):
        finetune(digits_small, "efficientnet_lite0", killed, progress=False, **RESUMABLE)
    with pytest.raises(UsageError, match="--lr differ"):
        finetune(digits_small, "efficientnet_lite0", killed, progress=False, resume=True,
                 **{**RESUMABLE, "lr": 0.5})
    resumed = finetune(digits_small, "efficientnet_lite0", killed, progress=False, resume=True,
                       **RESUMABLE)
    whole = finetune(digits_small, "efficientnet_lite0", tmp_path / "whole", progress=False,
                     **RESUMABLE)
    assert not checkpoint.exists()
    assert resumed.training["history"] == whole.training["history"]
    a, b = load_file(str(killed / WEIGHTS_FILE)), load_file(str(tmp_path / "whole" / WEIGHTS_FILE))
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def cli_run(*args, code=0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output + str(result.exception)
    return result


def test_cli_finetune_compare_probe_predict_and_errors(digits_small, tmp_path):
    out = tmp_path / "ft"
    result = cli_run("finetune", digits_small, "--unfreeze", "top-1", "--epochs", "1", "-b", "8",
                     "--input-size", SIZE, "--class-balanced", "--compare-probe", "-q", "-o", out,
                     "--cache", tmp_path / "cache")
    assert "frozen probe: val accuracy" in result.output
    assert "fine-tuned:   val accuracy" in result.output and "bn2 0.0005" in result.output
    spec = json.loads((out / SPEC_FILE).read_text())
    probe = spec["training"]["probe"]
    assert probe["classifier"] == "logreg" and 0 <= probe["val_accuracy"] <= 1

    rows = json.loads(cli_run("predict", out, digits_small, "--json", "-q",
                              "--cache", tmp_path / "cache").stdout)
    assert len(rows) == 20 and set(rows[0]) == {"id", "label", *(f"p(label={c})" for c in "56789")}
    assert all(r["label"] == max("56789", key=lambda c: r[f"p(label={c})"]) for r in rows)
    assert sum(rows[0][f"p(label={c})"] for c in "56789") == pytest.approx(1, abs=1e-5)
    cli_run("extract", digits_small, "--model", out, "-q", "-o", tmp_path / "f.parquet",
            "--cache", tmp_path / "cache")

    for args, code, message in [
            (["--unfreeze", "top-99", "--input-size", SIZE, "-o", tmp_path / "x"], 2,
             "top-1 ... top-8"),
            (["--unfreeze", "middle", "-o", tmp_path / "x"], 2, "use top-N"),
            (["--layer", "logits", "-o", tmp_path / "x"], 2, "the head reads features"),
            (["-o", out], 2, "already holds a fine-tuned backbone"),
            (["--resume", "-o", tmp_path / "y"], 3, "no checkpoint to resume")]:
        result = cli_run("finetune", digits_small, *args, code=code)
        assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_another_input_size_gives_the_layer_shapes_of_that_size():
    """Fine-tuning at --input-size replaces the base's preprocessing; a flattened block's
    size follows it (before: the shapes probed at the old size stayed, and the head was built
    for them: a matrix-shape traceback)."""
    backbone = create_backbone("efficientnet_lite0", layer="blocks.6", pool="flatten")
    at_224 = backbone.dim
    backbone.preprocessing = resized(backbone.preprocessing, SIZE)
    assert backbone.dim != at_224
    batch = torch.zeros(1, 3, SIZE, SIZE)
    assert backbone.embed(batch).shape == (1, backbone.dim)
