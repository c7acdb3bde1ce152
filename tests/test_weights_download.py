"""torchvision weights that are not on disk are downloaded (here from a real HTTP server on
127.0.0.1 standing in for a mirror of download.pytorch.org) into torch's own hub cache, checked
against the checksum in their name; offline, the error names the file and the folder."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import embedkit
from embedkit.cli.main import cli
from embedkit.errors import BadWeights
from one_line_error import assert_one_line_error

NAME = "mobilenet_v3_small"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files without logging each request to stderr, where the CLI's errors go."""

    def log_message(self, format, *args):
        pass


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A loopback HTTP server serving a small checkpoint under torchvision's naming scheme."""
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.get_model(NAME, weights=None).state_dict()
    served = tmp_path / "served"
    served.mkdir()
    blob = served / "blob.pth"
    torch.save(state, blob)
    prefix = hashlib.sha256(blob.read_bytes()).hexdigest()[:8]
    blob.rename(served / f"{NAME}-{prefix}.pth")
    real = torchvision.models.get_model_weights(NAME).DEFAULT
    fake = SimpleNamespace(url=f"https://download.pytorch.org/models/{NAME}-{prefix}.pth",
                           meta=real.meta, transforms=real.transforms)
    monkeypatch.setattr(torchvision.models, "get_model_weights",
                        lambda name: SimpleNamespace(DEFAULT=fake))
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("EMBEDKIT_WEIGHTS_MIRROR", f"http://127.0.0.1:{server.server_port}/")
    yield SimpleNamespace(file=f"{NAME}-{prefix}.pth", state=state, served=served,
                          hub=tmp_path / "torch-home" / "hub" / "checkpoints",
                          transforms=real.transforms)
    server.shutdown()


def test_missing_weights_are_downloaded_into_the_hub_cache(mirror, digits_small, tmp_path):
    backbone = embedkit.create_backbone(NAME)
    assert not backbone.source.available and backbone.source.downloadable
    es = embedkit.extract(digits_small, backbone, cache=tmp_path / "c", progress=False,
                          workers=0)
    assert (mirror.hub / mirror.file).is_file(), "torch's own cache holds the file now"
    again = embedkit.create_backbone(NAME)
    assert again.source.available and again.fingerprint() == backbone.fingerprint()
    reference = reference_features(mirror, digits_small, es.ids)
    # the served weights are a random initialisation whose features are tiny (about 1e-8, and
    # as different between images): the tolerance follows their scale
    np.testing.assert_allclose(es.vectors, reference, rtol=0, atol=1e-4 * np.abs(reference).max())


def reference_features(mirror, folder, ids) -> np.ndarray:
    """The served weights' penultimate features, computed without embedkit: torchvision's own
    model and transforms, and a hook on the input of the last classifier layer."""
    import torchvision
    from PIL import Image

    model = torchvision.models.get_model(NAME, weights=None)
    model.load_state_dict(mirror.state)
    model.eval()
    captured = []
    model.classifier[-1].register_forward_hook(lambda mod, inp, out: captured.append(inp[0]))
    transform = mirror.transforms()
    batch = torch.stack([transform(Image.open(folder / i).convert("RGB")) for i in ids])
    with torch.no_grad():
        model(batch)
    return captured[0].numpy()


def test_a_file_that_does_not_match_its_checksum_is_refused(mirror, digits_small, tmp_path):
    (mirror.served / mirror.file).write_bytes(b"not the published file")
    with pytest.raises(BadWeights, match="does not match the checksum") as refused:
        embedkit.extract(digits_small, NAME, cache=tmp_path / "c", progress=False, workers=0)
    assert refused.value.exit_code == 4
    assert not (mirror.hub / mirror.file).exists(), "nothing wrong is left in the cache"


def test_a_quiet_refused_download_is_one_line(mirror, digits_small, tmp_path):
    """README: the progress bar is hidden with --quiet or when stderr is not a terminal."""
    (mirror.served / mirror.file).write_bytes(b"not the published file")
    result = CliRunner().invoke(cli, ["extract", str(digits_small), "--model", NAME, "--cache",
                                      str(tmp_path / "c"), "-q", "--workers", "0"])
    assert_one_line_error(result, 4, "does not match the checksum")


def test_offline_the_error_names_the_file_and_the_folder(mirror, digits_small, tmp_path,
                                                         monkeypatch):
    monkeypatch.setenv("EMBEDKIT_WEIGHTS_MIRROR", "http://127.0.0.1:9/")  # nothing listens
    result = CliRunner().invoke(cli, ["extract", str(digits_small), "--model", NAME, "--cache",
                                      str(tmp_path / "c"), "-q", "--workers", "0"])
    assert_one_line_error(result, 4, f"put {mirror.file} in {mirror.hub}")
