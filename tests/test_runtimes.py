"""CPU inference runtimes: ONNX Runtime (and OpenVINO where installed) give eager PyTorch's vectors.

The exported graph is built once for the module (about 10 s on 2 cores) in a shared cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedkit.errors import UsageError
from one_line_error import assert_one_line_error

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

#: float32 rounding in a different operator order: measured max abs difference about 1e-5
#: on EfficientNet-Lite0 pre_logits (values up to about 6)
ATOL = 1e-4


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Four real photos (scikit-image samples) as 500x375 JPEG files."""
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(getattr(data, name)()).convert("RGB").resize((500, 375)).save(
            folder / f"{name}.jpg", quality=90)
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def eager(photos, cache):
    import embedkit

    return embedkit.extract(photos, "efficientnet_lite0", cache=cache, progress=False)


def test_onnx_vectors_match_eager_torch(photos, cache, eager):
    import embedkit

    onnx = embedkit.extract(photos, "efficientnet_lite0", cache=cache, runtime="onnx",
                            progress=False)
    assert onnx.ids == eager.ids
    assert onnx.summary.computed == len(eager)  # its own fingerprint: nothing reused from eager
    assert onnx.meta["fingerprint"] != eager.meta["fingerprint"]
    diff = np.abs(onnx.vectors - eager.vectors).max()
    assert diff < ATOL, f"max abs difference {diff:.2e}"
    exported = list((cache / "runtimes").glob("*.onnx"))
    assert len(exported) == 1

    again = embedkit.extract(photos, "efficientnet_lite0", cache=cache, runtime="onnx",
                             progress=False)
    assert again.summary.computed == 0 and again.summary.cache_hits == len(eager)
    assert list((cache / "runtimes").glob("*.onnx")) == exported


def test_feature_model_cuts_block_layers_like_the_eager_hooks():
    """What is exported: the hook-free cut (classifier -> Identity, or FX below pre_logits) plus
    pooling equals the eager hooked forward exactly (pre_logits is checked through ONNX above)."""
    import torch

    from embedkit.registry import create_backbone
    from embedkit.runtimes import feature_model

    x = torch.rand(2, 3, 224, 224) * 2 - 1
    backbone = create_backbone("efficientnet_lite0", layer="blocks.5", pool="gem")
    with torch.no_grad():
        got = feature_model(backbone)(x).numpy()
    assert got.shape == (2, backbone.dim)
    np.testing.assert_allclose(got, backbone.embed(x), atol=1e-6)


def test_openvino_fp32_matches_eager_torch(photos, cache, eager):
    pytest.importorskip("openvino")
    import embedkit

    ov = embedkit.extract(photos, "efficientnet_lite0", cache=cache, runtime="openvino",
                          precision="fp32", progress=False)
    diff = np.abs(ov.vectors - eager.vectors).max()
    assert diff < ATOL, f"max abs difference {diff:.2e}"
    # the same exported ONNX file serves both runtimes
    assert len(list((cache / "runtimes").glob("*.onnx"))) == 1


#: OpenVINO bf16 against eager fp32, per image (bf16 keeps 8 bits of mantissa): measured on the
#: four photos on a CPU with AMX, 0.9979 to 0.9997 (docs/performance.md)
BF16_MIN_COSINE = 0.995


def cpu_has_bf16() -> bool:
    """Whether this CPU advertises bf16 instructions (the avx512_bf16 or amx_bf16 flag in
    /proc/cpuinfo): the hardware condition under which OpenVINO offers bf16 inference, read
    independently of OpenVINO so that the product's own answer is checked against it."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return False
    flags = {flag for line in cpuinfo.read_text().splitlines() if line.startswith("flags")
             for flag in line.partition(":")[2].split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def test_bf16_on_the_cpu_is_openvino_only(photos, cache):
    import embedkit

    with pytest.raises(UsageError, match="fp32"):
        embedkit.extract(photos, "efficientnet_lite0", cache=cache, runtime="onnx",
                         precision="bf16", progress=False)


def test_openvino_bf16_is_within_tolerance_of_fp32_on_a_bf16_cpu(photos, cache, eager):
    pytest.importorskip("openvino")
    if not cpu_has_bf16():
        pytest.skip("this CPU has no avx512_bf16 / amx_bf16: the refusal is tested instead")
    import embedkit

    bf16 = embedkit.extract(photos, "efficientnet_lite0", cache=cache, runtime="openvino",
                            precision="bf16", progress=False)
    fp32 = embedkit.extract(photos, "efficientnet_lite0", cache=cache, runtime="openvino",
                            precision="fp32", progress=False)
    assert bf16.ids == eager.ids and bf16.meta["fingerprint"] != fp32.meta["fingerprint"]
    cosine = np.sum(bf16.vectors * eager.vectors, axis=1) / (
        np.linalg.norm(bf16.vectors, axis=1) * np.linalg.norm(eager.vectors, axis=1))
    assert cosine.min() >= BF16_MIN_COSINE, f"cosine per image {np.round(cosine, 5)}"
    # computed in bf16, not fp32 under another name
    assert np.abs(bf16.vectors - fp32.vectors).max() > ATOL


def test_openvino_bf16_is_refused_on_a_cpu_without_bf16(photos, cache):
    pytest.importorskip("openvino")
    if cpu_has_bf16():
        pytest.skip("this CPU has bf16 instructions: the bf16 vectors are tested instead")
    import embedkit

    with pytest.raises(UsageError, match="bf16 instructions"):
        embedkit.extract(photos, "efficientnet_lite0", cache=cache, runtime="openvino",
                         precision="bf16", progress=False)


def test_runtime_refuses_text_models_and_unknown_names(tmp_path):
    import embedkit

    lines = tmp_path / "lines.txt"
    lines.write_text("the cat\nthe dog\n")
    with pytest.raises(UsageError, match="torch image backbones"):
        embedkit.extract(lines, runtime="onnx", cache=tmp_path / "c", progress=False)
    with pytest.raises(UsageError, match="unknown runtime"):
        embedkit.extract(lines, runtime="tensorrt", cache=tmp_path / "c", progress=False)


def test_cli_runtime_option(photos, cache, eager):
    from click.testing import CliRunner

    from embedkit.cli.main import cli

    result = CliRunner().invoke(cli, ["extract", str(photos), "--runtime", "onnx", "--cache",
                                      str(cache), "--json", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["cache_hits"] + summary["computed"] == len(eager) and not summary["skipped"]
    bad = CliRunner().invoke(cli, ["extract", str(photos), "--runtime", "onnx", "--device",
                                   "cuda", "--cache", str(cache)])
    assert_one_line_error(bad, 2)
