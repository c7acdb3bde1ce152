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

NAME = "mobilenet_v3_small"


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
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("EMBEDKIT_WEIGHTS_MIRROR", f"http://127.0.0.1:{server.server_port}/")
    yield SimpleNamespace(file=f"{NAME}-{prefix}.pth", state=state, served=served,
                          hub=tmp_path / "torch-home" / "hub" / "checkpoints")
    server.shutdown()


def test_missing_weights_are_downloaded_into_the_hub_cache(mirror, digits_small, tmp_path):
    backbone = embedkit.create_backbone(NAME)
    assert not backbone.source.available and backbone.source.downloadable
    es = embedkit.extract(digits_small, backbone, cache=tmp_path / "c", progress=False,
                          workers=0)
    assert (mirror.hub / mirror.file).is_file(), "torch's own cache holds the file now"
    again = embedkit.create_backbone(NAME)
    assert again.source.available and again.fingerprint() == backbone.fingerprint()
    # the vectors are those of the served weights
    local = embedkit.create_backbone(NAME, weights=str(mirror.hub / mirror.file))
    np.testing.assert_array_equal(
        embedkit.extract(digits_small, local, cache=tmp_path / "c2", progress=False,
                         workers=0).vectors, es.vectors)


def test_a_file_that_does_not_match_its_checksum_is_refused(mirror, digits_small, tmp_path):
    (mirror.served / mirror.file).write_bytes(b"not the published file")
    result = CliRunner().invoke(cli, ["extract", str(digits_small), "--model", NAME, "--cache",
                                      str(tmp_path / "c"), "-q", "--workers", "0"])
    assert result.exit_code == 4 and "does not match the checksum" in result.output
    assert not (mirror.hub / mirror.file).exists(), "nothing wrong is left in the cache"


def test_offline_the_error_names_the_file_and_the_folder(mirror, digits_small, tmp_path,
                                                         monkeypatch):
    monkeypatch.setenv("EMBEDKIT_WEIGHTS_MIRROR", "http://127.0.0.1:9/")  # nothing listens
    result = CliRunner().invoke(cli, ["extract", str(digits_small), "--model", NAME, "--cache",
                                      str(tmp_path / "c"), "-q", "--workers", "0"])
    assert result.exit_code == 4, result.output
    line = [ln for ln in result.output.splitlines() if ln.startswith("error:")][0]
    assert f"put {mirror.file} in {mirror.hub}" in line
