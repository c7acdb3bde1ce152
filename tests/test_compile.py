"""`compile=True` (`--compile`): the model that embeds is `torch.compile`d and gives the eager
vectors.

torch.compile on the CPU (inductor, which writes C++ and builds it with gcc) took 90 s for
EfficientNet-Lite0 on 2 busy cores, so the test compiles timm's `test_resnet` (0.5 M parameters,
random weights saved to a file: the weights do not matter for equality): 41 s the first time,
about 20 s once inductor's build cache (/tmp/torchinductor_<user>) holds it.  Two small JPEG
files go through the tensor decode path (`decode="device"`, on the CPU too), the path that
compiles: on the CPU's default path `compile=True` changes nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import embedkit
from embedkit.registry import create_backbone

#: inductor fuses and reorders float32 operations: measured max abs difference 3e-8
ATOL = 1e-5


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(data, name)()).resize((80, 60)).save(folder / f"{name}.jpg")
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "test_resnet.safetensors"
    save_file(timm.create_model("test_resnet").state_dict(), str(path))
    return str(path)


def test_compiled_model_gives_the_eager_vectors(photos, weights, tmp_path, monkeypatch):
    compiled = []
    real_compile = torch.compile

    def recording_compile(model, *args, **kwargs):
        compiled.append(model)
        return real_compile(model, *args, **kwargs)

    def vectors(cache, **options):
        backbone = create_backbone("timm/test_resnet", weights=weights)
        return embedkit.extract(photos, backbone, cache=tmp_path / cache, decode="device",
                                device="cpu", workers=0, progress=False, **options)

    eager = vectors("eager")
    monkeypatch.setattr(torch, "compile", recording_compile)
    fast = vectors("compiled", compile=True)
    assert len(compiled) == 1, "the model was compiled once"
    assert fast.ids == eager.ids and fast.summary.computed == 2
    np.testing.assert_allclose(fast.vectors, eager.vectors, rtol=0, atol=ATOL)
