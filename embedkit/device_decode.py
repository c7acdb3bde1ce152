"""JPEG files decoded and preprocessed on the device: the GPU extraction path.

The usual pipeline decodes and resizes with PIL in a few CPU workers, about 240 photos/s per core,
while an H100 runs ResNet-50 at about 12,800 images/s: the GPU would idle nine tenths of the time.
Here the CPU only reads file bytes and the device does the rest:

  reader threads   read each file and sniff its JPEG header (`jpeg_header`); anything the device
                   decoder should not take (PNG, CMYK, 12-bit, EXIF-rotated, huge) is decoded and
                   preprocessed right there with the backbone's own PIL path
  feeder thread    on its own CUDA stream: batched nvJPEG decode (`torchvision.io.decode_jpeg`
                   with device="cuda"), resize / centre-crop / normalise on the device with the
                   backbone's `ImagePreprocess` numbers (`TensorPreprocess`), channels-last; an
                   image nvJPEG rejects falls back to the PIL path in its own slot
  main thread      the model (bf16 autocast, optionally `torch.compile`d), then an asynchronous
                   copy of the vectors into pinned host memory; a batch is converted to NumPy only
                   after the next one has been queued, so the device never waits on a copy-back

Order is kept and nothing is lost: every item comes back as a vector or as an error message.
The same code runs on a CPU tensor (device="cpu": libjpeg-turbo decode, the same resize code),
which is how the tests check it against the PIL path.  Resize kernels differ (PIL's and torch's
antialiased bicubic are both Keys a=-0.5 but round differently), so the vectors are close, not
equal: cosine > 0.99999 per image in fp32 on the CPU tensor path (pixels within one level of
PIL's), > 0.99 in bf16 (tests/test_device_decode.py,
docs/performance.md).  The path has its own fingerprint part.
"""

from __future__ import annotations

import contextlib
import queue
import struct
import threading
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .backbone import ImagePreprocess, TorchImageBackbone, autocast, fingerprint_of
from .errors import EmbedkitError
from .files import available_cores
from .inputs import MAX_PIXELS
from .options import INTERPOLATIONS
from .runtimes import feature_model

__all__ = ["DECODE_VERSION", "applies", "decode_jpegs", "device_decodable", "embed_stream",
           "fingerprint", "jpeg_header", "JpegHeader", "TensorPreprocess"]

#: Fingerprint part of vectors computed through this path (resize kernel differs from PIL's).
DECODE_VERSION = "tensor-1"


def applies(backbone, device: str) -> bool:
    """Whether extraction on `device` takes this path by default: torch image backbones on CUDA.
    (On the CPU it is there on request, `extract(..., decode="device")`: same vectors within the
    stated tolerance, and not faster than PIL there.)"""
    return device.startswith("cuda") and isinstance(backbone, TorchImageBackbone)


def fingerprint(backbone: TorchImageBackbone) -> str:
    return fingerprint_of(backbone=backbone.fingerprint(), decode=DECODE_VERSION)


# --------------------------------------------------------------------------------------------
# What the device decoder may take


@dataclass(frozen=True)
class JpegHeader:
    width: int
    height: int
    components: int  # 1 grey, 3 YCbCr, 4 CMYK / YCCK
    precision: int  # bits per sample
    progressive: bool
    orientation: int  # EXIF orientation, 1 = as stored


def jpeg_header(data: bytes) -> JpegHeader | None:
    """Parse the markers up to the frame header (SOFn); None if this is no JPEG we can read."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    pos, orientation = 2, 1
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        segment = data[pos + 4:pos + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
            orientation = _exif_orientation(segment[6:]) or 1
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if len(segment) < 6:
                return None
            precision, height, width, components = struct.unpack(">BHHB", segment[:6])
            return JpegHeader(width, height, components, precision, marker == 0xC2, orientation)
        pos += 2 + length
    return None


def _exif_orientation(tiff: bytes) -> int | None:
    """Tag 0x0112 of IFD0 of an EXIF block (TIFF layout, either byte order)."""
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
        for k in range(count):
            entry = tiff[ifd + 2 + 12 * k: ifd + 14 + 12 * k]
            tag, kind, _, value = struct.unpack(order + "HHIH", entry[:10])
            if tag == 0x0112 and kind == 3:
                return value
    except (KeyError, struct.error):
        pass
    return None


def device_decodable(header: JpegHeader | None) -> bool:
    """8-bit grey or YCbCr, as stored, within the decompression-bomb limit; the rest goes the PIL
    way (which converts CMYK, applies EXIF rotation and refuses bombs exactly as before)."""
    return (header is not None and header.components in (1, 3) and header.precision == 8
            and header.orientation == 1 and header.width * header.height <= MAX_PIXELS)


# --------------------------------------------------------------------------------------------
# Preprocessing on tensors


class TensorPreprocess:
    """`ImagePreprocess` on uint8 tensors [3, h, w] on any device: the same short-side resize
    (`ImagePreprocess.resized_size`), centre crop and normalisation as the PIL path, with
    torch's antialiased kernels.  Images of one size are resized together in one call."""

    def __init__(self, spec: ImagePreprocess):
        self.spec = spec
        self.mode = INTERPOLATIONS.check(spec.interpolation)  # torch names them as PIL does

    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        s = self.spec
        out = [None] * len(images)
        by_size: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            by_size.setdefault(tuple(im.shape[-2:]), []).append(i)
        device = images[0].device
        mean = torch.tensor(s.mean, device=device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(s.std, device=device).view(1, 3, 1, 1) * 255.0
        for (h, w), idx in by_size.items():
            x = torch.stack([images[i] for i in idx]).float()
            nw, nh = s.resized_size(w, h)
            # PIL resizes width then height and stores each pass as uint8: do the same, or the
            # vectors drift (cosine 0.9995 instead of 0.99999 for EfficientNet-Lite0)
            for size in ((h, nw), (nh, nw)):
                if size != tuple(x.shape[-2:]):
                    x = self._resize(x, size)
            left = int(round((nw - s.input_size) / 2.0))
            top = int(round((nh - s.input_size) / 2.0))
            x = x[:, :, top:top + s.input_size, left:left + s.input_size]
            x = (x - mean) / std
            for j, i in enumerate(idx):
                out[i] = x[j]
        return torch.stack(out)


    def _resize(self, x, size):
        smooth = self.mode != "nearest"
        x = torch.nn.functional.interpolate(x, size=size, mode=self.mode, antialias=smooth,
                                            align_corners=False if smooth else None)
        return x.clamp_(0, 255).round_()


def decode_jpegs(blobs: list[torch.Tensor], device: str) -> list[torch.Tensor | None]:
    """Decode JPEG bytes to uint8 RGB [3, h, w] on `device`, in one batched call when all decode;
    an image the decoder rejects is None in its slot (never raises)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision >= 0.29 deprecates its image codecs
        try:
            return list(decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            out = []
            for blob in blobs:
                try:
                    out.append(decode_jpeg(blob, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    out.append(None)
            return out


# --------------------------------------------------------------------------------------------
# The pipeline


def _read(item, backbone):
    """Reader (a loader worker process): ("jpeg", file bytes) for the device decoder, else what
    `_read_pil` says."""
    try:
        with open(item.path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return "error", f"{item.path}: cannot read ({exc.strerror or exc})"
    if device_decodable(jpeg_header(data)):
        return "jpeg", data
    return _read_pil(item, backbone)


class _Reads(torch.utils.data.Dataset):
    """Items read (and, off the device path, decoded by PIL) in DataLoader worker processes:
    Python threads were GIL-bound at about 6,000 small files/s on 16 cores."""

    def __init__(self, items, backbone):
        self.items, self.backbone = items, backbone

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return (i, *_read(self.items[i], self.backbone))


def _as_list(samples):
    return samples


def _read_pil(item, backbone):
    """The CPU path for one item: ("ready", float tensor [3, s, s]) or ("error", message)."""
    try:
        return "ready", backbone.preprocess(item)
    except EmbedkitError as exc:
        return "error", str(exc)
    except Exception as exc:  # a plugin's own failure on one item
        return "error", f"{type(exc).__name__}: {exc}"


class _Batches:
    """Feeder: turns reader results into device batches (indices, x, errors, ready event)."""

    def __init__(self, backbone, items, device, batch_size, workers):
        self.backbone, self.items, self.device = backbone, items, device
        self.batch_size, self.workers = batch_size, workers
        self.prep = TensorPreprocess(backbone.preprocessing)
        self.cuda = device.startswith("cuda")
        self.stream = torch.cuda.Stream(device) if self.cuda else None

    def batches(self):
        """Yield batches in order; reads run ahead in the loader's worker processes."""
        loader = torch.utils.data.DataLoader(
            _Reads(self.items, self.backbone), batch_size=self.batch_size, shuffle=False,
            num_workers=self.workers, collate_fn=_as_list,
            prefetch_factor=4 if self.workers else None)
        for reads in loader:
            with torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext():
                batch = self._assemble(reads)
            yield batch

    def _assemble(self, reads):
        jpegs = [(i, torch.frombuffer(bytearray(v), dtype=torch.uint8))
                 for i, kind, v in reads if kind == "jpeg"]
        decoded = dict(zip([i for i, _ in jpegs],
                           decode_jpegs([v for _, v in jpegs], self.device))) if jpegs else {}
        slots, errors = {}, []
        for i, kind, v in reads:
            if kind == "jpeg" and decoded[i] is None:  # the device decoder rejected it
                kind, v = _read_pil(self.items[i], self.backbone)
            if kind == "error":
                errors.append((i, v))
            elif kind == "ready":
                slots[i] = v.to(self.device, non_blocking=True)
        on_device = [i for i in decoded if decoded[i] is not None]
        if on_device:
            slots.update(zip(on_device, self.prep([decoded[i] for i in on_device])))
        indices = [i for i, _, _ in reads if i in slots]
        x = None
        if indices:
            x = torch.stack([slots[i] for i in indices]).contiguous(
                memory_format=torch.channels_last)
        event = None
        if self.cuda:
            event = torch.cuda.Event()
            event.record(self.stream)
        return indices, x, errors, event


def _prefetch(generator, depth: int):
    """Run a generator in a thread, `depth` results ahead; exceptions re-raise in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def run():
        try:
            for value in generator:
                while not stop.is_set():
                    try:
                        q.put(value, timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=run, daemon=True, name="embedkit-feeder")
    thread.start()
    try:
        while True:
            value = q.get()
            if value is done:
                return
            if isinstance(value, BaseException):
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=5)


def embed_stream(backbone: TorchImageBackbone, items, device: str, batch_size: int,
                 workers: int | None = None, compile: bool = False):
    """Yield (indices, float32 vectors [k, dim], errors [(index, message)]) per batch, in order.

    `indices` index `items`; every item appears once, in `indices` or in `errors`.
    """
    workers = available_cores() if workers is None else workers
    model = feature_model(backbone)
    if compile:
        model = torch.compile(model)
    kind = torch.device(device).type
    feeder = _Batches(backbone, items, device, batch_size, workers)
    previous = None  # (indices, host tensor, errors, copy-done event) of the batch before
    with torch.inference_mode():
        for indices, x, errors, ready in _prefetch(feeder.batches(), depth=3):
            host = copied = None
            if indices:
                if ready is not None:
                    torch.cuda.current_stream().wait_event(ready)
                    x.record_stream(torch.cuda.current_stream())
                with autocast(kind, backbone.precision):
                    feats = model(x).float()
                if kind == "cuda":
                    host = torch.empty(feats.shape, dtype=torch.float32, pin_memory=True)
                    host.copy_(feats, non_blocking=True)
                    copied = torch.cuda.Event()
                    copied.record()
                else:
                    host = feats
            if previous is not None:
                yield _finish(*previous)
            previous = (indices, host, errors, copied)
        if previous is not None:
            yield _finish(*previous)


def _finish(indices, host, errors, copied):
    if copied is not None:
        copied.synchronize()
    vectors = host.numpy() if host is not None else np.empty((0, 0), np.float32)
    return indices, vectors, errors
