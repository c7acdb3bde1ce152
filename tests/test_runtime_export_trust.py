"""Runtime exports are checked before use (issue 19): an exported ONNX file is an artifact
embedkit reads back, so a file that is not the one exported for this model (another model's
export copied over it, weights edited inside it, a truncated file) is exported again and never
run; `cache verify` covers exports, and `--deep` recomputes runtime-made vectors with eager
PyTorch.

Kept small: EfficientNet-Lite0 cut at blocks.0 (its cheapest export, seconds), two photos.  The
good export is made once and copied into each test's own cache, so every test starts from a
cache with no vectors (the runtime really runs) and the export it damages.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

MODEL, LAYER = "efficientnet_lite0", "blocks.0"
#: as tests/test_runtimes.py: float32 rounding in another operator order
ATOL = 1e-4


def _extract(photos, cache, pool="avg", runtime="onnx"):
    import embedkit

    return embedkit.extract(photos, MODEL, layer=LAYER, pool=pool, cache=cache, runtime=runtime,
                            workers=0, progress=False)  # no worker processes to start


def _export(cache: Path) -> Path:
    """The one exported model file in a cache."""
    (path,) = [p for p in (cache / "runtimes").glob("*.onnx") if not p.name.startswith(".")]
    return path


def _cli(*args):
    from embedkit.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two real photos (scikit-image samples) as small JPEG files."""
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(data, name)()).convert("RGB").resize((256, 192)).save(
            folder / f"{name}.jpg", quality=90)
    return folder


@pytest.fixture(scope="module")
def eager(photos, tmp_path_factory):
    """The reference: eager PyTorch's vectors."""
    return _extract(photos, tmp_path_factory.mktemp("eager"), runtime="torch")


@pytest.fixture(scope="module")
def pristine(photos, tmp_path_factory):
    """A cache holding the good export (and whatever embedkit keeps beside it)."""
    cache = tmp_path_factory.mktemp("pristine")
    _extract(photos, cache)
    return cache


@pytest.fixture
def cache(pristine, tmp_path):
    """A cache with no vectors and a copy of the good export."""
    shutil.copytree(pristine / "runtimes", tmp_path / "cache" / "runtimes")
    return tmp_path / "cache"


def _assert_eager(got, eager):
    assert got.ids == eager.ids
    diff = np.abs(got.vectors - eager.vectors).max()
    assert diff < ATOL, f"max abs difference {diff:.2e} from eager PyTorch"


def test_another_models_export_copied_over_is_rebuilt_not_served(photos, cache, tmp_path,
                                                                   capsys):
    """The avg-pooled export, and anything recorded beside it, copied to the names of the
    max-pooled model's export (the same width, so nothing would look amiss): a run of the
    max-pooled model must notice, export its own, and give eager PyTorch's max-pooled vectors."""
    from embedkit.registry import create_backbone
    from embedkit.runtimes import export_path

    source = _export(cache)
    target = export_path(create_backbone(MODEL, layer=LAYER, pool="max"), source.parent)
    for f in list(source.parent.glob(f"{source.name}*")):
        shutil.copyfile(f, target.parent / (target.name + f.name[len(source.name):]))

    got = _extract(photos, cache, pool="max")
    _assert_eager(got, _extract(photos, tmp_path / "eager", pool="max", runtime="torch"))
    assert target.name in capsys.readouterr().err  # a one-line note names the rebuilt export
    assert target.read_bytes() != source.read_bytes()


def test_export_with_edited_weights_is_rebuilt_not_served(photos, eager, cache, capsys):
    """Half of the stem convolution's filters scaled by -3 inside the ONNX file (onnx package):
    a valid model that computes something else."""
    from onnx import numpy_helper

    path = _export(cache)
    model = onnx.load(str(path))
    (init,) = [i for i in model.graph.initializer if i.name.endswith("conv_stem.weight")]
    weights = numpy_helper.to_array(init).copy()
    weights[: len(weights) // 2] *= -3
    init.CopyFrom(numpy_helper.from_array(weights, init.name))
    onnx.save(model, str(path))

    _assert_eager(_extract(photos, cache), eager)
    assert path.name in capsys.readouterr().err


def test_truncated_export_is_rebuilt_without_a_traceback(photos, eager, cache, tmp_path):
    path = _export(cache)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    out = tmp_path / "vectors.parquet"

    result = _cli("extract", photos, "--model", MODEL, "--layer", LAYER, "--pool", "avg",
                  "--runtime", "onnx", "--workers", 0, "--cache", cache, "-o", out, "--json", "-q")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert path.name in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert json.loads(result.stdout)["computed"] == len(eager)
    from embedkit.embeddings import load_embeddings

    _assert_eager(load_embeddings(out), eager)


def test_cache_verify_reports_a_damaged_export_and_repair_removes_it(cache):
    path = _export(cache)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte inside the weights
    path.write_bytes(bytes(data))

    found = _cli("cache", "verify", "--cache", cache)
    assert found.exit_code == 6, found.output
    assert path.name in found.stderr and "Traceback" not in found.output

    repaired = _cli("cache", "verify", "--repair", "--cache", cache)
    assert repaired.exit_code == 0, repaired.output
    assert not path.exists()  # the next run exports it again
    assert _cli("cache", "verify", "--cache", cache).exit_code == 0


def test_an_export_without_a_record_is_no_problem_for_verify_and_repair_removes_it(cache):
    """An export made before records were kept is never used as it is (it is exported again
    when next needed), so a healthy cache from an older embedkit verifies clean."""
    from embedkit.artifact_records import RECORD_SUFFIX

    path = _export(cache)
    path.with_name(path.name + RECORD_SUFFIX).unlink()
    found = _cli("cache", "verify", "--cache", cache)
    assert found.exit_code == 0, found.output
    assert _cli("cache", "verify", "--repair", "--cache", cache).exit_code == 0
    assert not path.exists()


def test_deep_verify_recomputes_runtime_vectors_with_eager_pytorch(photos, eager, cache):
    """Vectors made through ONNX Runtime are recomputed with eager PyTorch (not skipped as
    "not checkable"), and a wrong vector planted under the runtime's fingerprint is caught."""
    from embedkit.store import Store

    made = _extract(photos, cache)
    agree = _cli("cache", "verify", "--deep", 10, "--device", "cpu", "--cache", cache)
    assert agree.exit_code == 0, agree.output
    assert f"{len(eager)} of {len(eager)} recomputed items agree" in agree.stdout
    assert "not check" not in agree.output

    with Store(cache) as store:
        fingerprint, content, shard, row = store.sample(1)[0]
        assert fingerprint == made.meta["fingerprint"]
        wrong = store.shard(shard).vectors[row][::-1].copy()  # same numbers, wrong order
        store.publish(fingerprint, [content], [store.shard(shard).ids[row]], wrong[None])
    caught = _cli("cache", "verify", "--deep", 10, "--device", "cpu", "--cache", cache)
    assert caught.exit_code == 6, caught.output
    assert "mismatch" in caught.stderr and "1 cached vector(s) differ" in caught.output
