"""The CLI as a user meets it: listings, JSON, exit codes, one-line errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from embedkit.cli.main import cli
from one_line_error import assert_one_line_error


def run(*args, ok=True):
    result = CliRunner().invoke(cli, list(args))
    if ok:
        assert result.exit_code == 0, result.output + str(result.exception)
    return result


def embedkit_subprocess(*args):
    return subprocess.run([sys.executable, "-m", "embedkit.cli.main", *args],
                          capture_output=True, text=True)


def test_models_json_lists_the_bundled_backbone_offline():
    rows = json.loads(run("models", "--json", "--available", "--modality", "image").output)
    lite0 = next(r for r in rows if r["name"] == "efficientnet_lite0")
    assert lite0 == {**lite0, "offline": True, "family": "efficientnet_lite"}
    assert "dim" not in lite0, "the listing probes no architecture unless asked (--detail)"
    assert all(r["offline"] for r in rows if "error" not in r)
    detail = json.loads(run("models", "--json", "--detail", "--modality", "image").output)
    lite0 = next(r for r in detail if r["name"] == "efficientnet_lite0")
    assert lite0 == {**lite0, "offline": True, "dim": 1280, "layer": "pre_logits"}
    names = json.loads(run("models", "--json").output)
    assert {"efficientnet_lite0", "glove-6b-50d", "resnet50"} <= {r["name"] for r in names}
    assert set(names[0]) == {"name", "modality", "family"}


def test_layers_lists_default_first_with_shapes():
    out = run("layers", "efficientnet_lite0", "--json").output
    rows = json.loads(out)
    assert rows[0] == {"layer": "pre_logits", "output": "1280", "default": True,
                       "pooling": "none (vector)"}
    assert {"layer": "blocks.3", "output": "80x14x14", "default": False,
            "pooling": "avg|max|gem|flatten"} in rows


def test_datasets_list_and_export(tmp_path):
    assert "animal-shape" in run("datasets", "list").output
    out = run("datasets", "export", "lfw-subset", str(tmp_path / "lfw"), "--per-class", "3").output
    assert "wrote 6 items" in out
    folders = sorted(p.name for p in (tmp_path / "lfw").iterdir() if not p.name.startswith("."))
    assert folders == ["face", "non-face"]


@pytest.mark.parametrize("args,code,message", [
    (["extract", "no/such/folder"], 3, "no such file, folder or bundled dataset"),
    (["extract", "digits", "--model", "efficientnet_lite9"], 3, "Did you mean"),
    (["layers", "efficientnet_lite0", "--weights", "/nope.pth"], 4, "/nope.pth"),
    (["datasets", "export", "digitz", "x"], 3, "did you mean digits"),
])
def test_errors_are_one_line_with_documented_exit_codes(args, code, message):
    assert_one_line_error(embedkit_subprocess(*args), code, message)


def test_extract_then_cache_maintenance(tmp_path, digits_small):
    cache = str(tmp_path / "cache")
    out = tmp_path / "d.parquet"
    first = json.loads(run("extract", str(digits_small), "--cache", cache, "-o", str(out),
                           "--json", "-q").output)
    assert first["computed"] == 20 and first["dim"] == 1280 and out.exists()
    second = json.loads(run("extract", str(digits_small), "--cache", cache, "--json").output)
    assert second["computed"] == 0 and second["cache_hits"] == 20
    info = json.loads(run("cache", "info", "--cache", cache, "--json").output)
    assert info["vectors"] == 20 and info["models"][0]["name"] == "efficientnet_lite0"
    assert run("cache", "verify", "--cache", cache).output.strip() == \
        "ok: every shard and runtime export matches its checksum"
    assert "->" in run("cache", "compact", "--cache", cache).output
    unknown = run("cache", "clear", "--cache", cache, "--fingerprint", "deadbeef", ok=False)
    assert_one_line_error(unknown, 2, "--fingerprint deadbeef: no vectors of that model",
                          info["models"][0]["fingerprint"])
    assert_one_line_error(run("cache", "verify", "--cache", cache, "--deep", "0", ok=False), 2)
    assert "removed" in run("cache", "clear", "--cache", cache, "--yes").output
    assert json.loads(run("cache", "info", "--cache", cache, "--json").output)["vectors"] == 0


@pytest.mark.parametrize("args", [["plot", "feats.parquet", "-o", "map.txt"],
                                  ["evaluate", "m.skops", "data", "--confusion", "cm.txt"],
                                  ["similarity", "a", "b", "--heatmap", "sim.txt"]])
def test_a_figure_suffix_matplotlib_cannot_write_is_refused_before_any_work(args):
    """Before: matplotlib's ValueError traceback, after the whole computation."""
    assert_one_line_error(CliRunner().invoke(cli, args), 2,
                          ".txt: a figure is written as .png, .svg or .pdf")


def test_train_saves_only_to_a_skops_file(tmp_path):
    """Before: `train feats.parquet -o feats.parquet` replaced the features with the model."""
    feats = tmp_path / "feats.parquet"
    feats.write_bytes(b"the user's features")
    assert_one_line_error(CliRunner().invoke(cli, ["train", str(feats), "-o", str(feats)]), 2,
                          "a model is saved as a .skops file")
    assert feats.read_bytes() == b"the user's features"
