"""What a file handed in as a checkpoint is, from its first bytes, before torch reads it.

Only a zip archive holding a ``data.pkl`` (torch's format since 1.6) or a pickle stream (the legacy
format) goes on to torch; anything else (a text file, an HTML page, an empty file, another zip,
random bytes) is described so that the error can say what it looks like.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

from yolotr.file_sniff import describe_head, read_head
from yolotr.models.foreign_pickle import ForeignObject, describe_value, restricted_pickle_module


def sniff_checkpoint(path: str | Path) -> tuple[str, str]:
    """What a file is, from its first bytes: ``(kind, description)``.

    ``kind`` is ``"zip"`` (torch's zip format: a ``.../data.pkl`` inside), ``"pickle"`` (a pickle
    stream: torch's legacy format, or any pickle) or ``"other"`` (not a checkpoint at all). The
    description says what the file looks like, for error messages: "a text file (first line:
    ...)", "an HTML page", "an empty file", "a zip archive that is not a PyTorch checkpoint
    (contains foo.txt, ...)", "random/binary data", ...
    """
    path = Path(path)
    size = path.stat().st_size
    head = read_head(path)
    if not head:
        return "other", describe_head(head)  # an empty file
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _sniff_zip(path, head, size)
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return _sniff_pickle(path, size)
    if path.suffix.lower() == ".onnx" or (head[:1] == b"\x08" and b"pytorch" in head[:32]):
        return "other", (
            "an ONNX model (only prediction runs .onnx files: `yolotr predict`, `YOLO(...).predict`; "
            "the rest needs a .pt checkpoint)"
        )
    looks = describe_head(head)  # an empty file, a known format, text (an HTML page, ...)
    return "other", looks or f"random/binary data ({size:,} bytes; neither a zip-format nor a pickle checkpoint)"


def _sniff_zip(path: Path, head: bytes, size: int) -> tuple[str, str]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        first = _first_zip_member(head)
        if first.endswith("data.pkl") or first.endswith("/version") or first.endswith("/byteorder"):
            return "zip", f"a PyTorch checkpoint cut short ({size:,} bytes; the zip directory at its end is missing)"
        return "zip", f"a damaged or truncated zip archive ({size:,} bytes; first member {first or '?'!r})"
    if any("/code/" in n for n in names):  # compiled code beside the weights: torch.jit.save's archive
        return "other", (
            "a TorchScript export, not a checkpoint; it can predict under a .torchscript name "
            "(YOLO('model.torchscript')), and training or validation need the .pt it was exported from"
        )
    if any(n.endswith("/data.pkl") for n in names):
        return "zip", f"a PyTorch zip checkpoint ({len(names)} members)"
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return "other", f"a zip archive that is not a PyTorch checkpoint (contains {shown or 'nothing'})"


def _first_zip_member(head: bytes) -> str:
    """The name in the first local file header of a zip (readable even when the end is cut off)."""
    if len(head) < 30 or not head.startswith(b"PK\x03\x04"):
        return ""
    n = int.from_bytes(head[26:28], "little")
    return head[30 : 30 + n].decode("utf-8", "replace")


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of torch's legacy (pre-zip) format


def _sniff_pickle(path: Path, size: int) -> tuple[str, str]:
    """A pickle stream: torch's legacy format starts with its magic number; a plain value is no checkpoint.

    The first pickle is read with the restricted unpickler (nothing foreign runs).
    """
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = restricted_pickle_module(str(path)).load(f)
    except Exception:  # noqa: BLE001 - a class we do not admit, or a damaged stream: torch decides
        return "pickle", f"a pickle stream ({size:,} bytes)"
    if isinstance(value, int) and value == LEGACY_MAGIC:
        return "pickle", f"a PyTorch checkpoint in the legacy format ({size:,} bytes)"
    if isinstance(value, dict) and isinstance(value.get("model") or value.get("ema"), ForeignObject):
        return "pickle", f"a pickled YOLOv5 checkpoint ({size:,} bytes)"
    return "other", f"a pickle of {describe_value(value)} (written by pickle.dump, not torch.save)"
