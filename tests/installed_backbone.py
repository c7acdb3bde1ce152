"""A cheap image backbone installed in a folder the way a third party's package is (a dist-info
folder with an `embedkit.backbones` entry point), for tests that run `embedkit` itself as a
child process: put the folder on the child's PYTHONPATH (`pythonpath_with`) and pass
`--model pixel-hash`.

The backbone is benchmarks/crash_loop.py's PixelHashBackbone (a vector that is a fixed function
of the decoded pixels, and no torch, so a child starts in about a second), with an optional
delay per item, `PIXEL_HASH_DELAY_S` in the child's environment, so that a run lasts long enough
to be interrupted on purpose.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

MODEL = "pixel-hash"
CRASH_LOOP = Path(__file__).resolve().parents[1] / "benchmarks" / "crash_loop.py"

_MODULE = """
    import importlib.util
    import os
    import time

    from embedkit.backbone import BackboneFamily

    _spec = importlib.util.spec_from_file_location("crash_loop", {crash_loop!r})
    _crash_loop = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_crash_loop)


    class DelayedPixelHash(_crash_loop.PixelHashBackbone):
        def embed(self, batch):
            time.sleep(float(os.environ.get("PIXEL_HASH_DELAY_S", "0")) * len(batch))
            return super().embed(batch)


    class Family(BackboneFamily):
        name, modality = "test-pixel-hash", "image"

        def models(self):
            return [{model!r}]

        def create(self, name, **options):
            return DelayedPixelHash()


    family = Family()
"""


def install_pixel_hash(site: Path) -> Path:
    """Writes the package into `site` (created) and returns `site`, for PYTHONPATH."""
    info = site / "embedkit_test_pixel_hash-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: embedkit-test-pixel-hash\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[embedkit.backbones]\ntest-pixel-hash = embedkit_test_pixel_hash:family\n")
    (site / "embedkit_test_pixel_hash.py").write_text(
        textwrap.dedent(_MODULE).format(crash_loop=str(CRASH_LOOP), model=MODEL))
    return site


def pythonpath_with(site: Path) -> str:
    """A child's PYTHONPATH: `site` first, then this process's own (which may point at another
    checkout of embedkit)."""
    return os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
