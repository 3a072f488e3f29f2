"""What a file looks like from its first bytes, for the errors about files that are not what their name says.

A checkpoint that is an HTML page, or a ``.jpg`` that is one (a download link that returned a sign-in page), is
named for what it is: :mod:`yolotr.models.checkpoint_sniff` for checkpoints, :func:`describe_non_image` for the
image readers (prediction and ``check-data``).
"""

from __future__ import annotations

from pathlib import Path

SNIFF_BYTES = 4096
MAGIC = (
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\x7fELF", "an executable (ELF)"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x89HDF", "an HDF5 file (Keras/TensorFlow weights?)"),
)
# ISO base media major brands (bytes 8-12, after "ftyp"): HEIF photos (which OpenCV does not decode) and AVIF
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
AVIF_BRANDS = {b"avif", b"avis"}
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")  # and WebP: RIFF....WEBP


def read_head(path: str | Path, size: int = SNIFF_BYTES) -> bytes:
    """The first ``size`` bytes of ``path`` (fewer for a shorter file)."""
    with open(path, "rb") as f:
        return f.read(size)


def as_text(head: bytes) -> str | None:
    """``head`` decoded as UTF-8 text when it plausibly is text (no NUL, mostly printable), else ``None``."""
    if b"\x00" in head:
        return None
    for cut in range(4):  # the read may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return None
    printable = sum(c.isprintable() or c in "\n\r\t\f" for c in text)
    return text if printable >= 0.95 * len(text) else None


def describe_text(text: str) -> str:
    """What a text file is: an HTML page, a Git LFS pointer, an SVG drawing, or text with its first line."""
    stripped = text.lstrip("\ufeff \t\r\n")
    lowered = stripped[:1024].lower()
    if lowered.startswith(("<!doctype html", "<html")) or "<html" in lowered or "<head" in lowered:
        return "an HTML page (a download link that returned a web page instead of the file?)"
    if stripped.startswith("version https://git-lfs"):
        return "a Git LFS pointer, not the file itself (run `git lfs pull`)"
    if lowered.startswith("<svg") or (lowered.startswith("<?xml") and "<svg" in lowered):
        return "an SVG drawing (vector graphics, not pixels)"
    first = next((line.strip() for line in stripped.splitlines() if line.strip()), "")
    first = first if len(first) <= 60 else first[:57] + "..."
    return f"a text file (first line: {first!r})" if first else "a text file of blank lines"


def describe_head(head: bytes) -> str | None:
    """What a file whose first bytes are ``head`` looks like: an empty file, a format of :data:`MAGIC`, a zip
    archive, or text (:func:`describe_text`); ``None`` for bytes of no known kind."""
    if not head:
        return "an empty file (0 bytes)"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "a zip archive"
    for magic, what in MAGIC:
        if head.startswith(magic):
            return what
    text = as_text(head)
    return describe_text(text) if text is not None else None


def describe_non_image(path: str | Path) -> str | None:
    """What a file that no image decoder read looks like, when it is something other than a damaged image: an
    empty file, text (an HTML page, a Git LFS pointer, an SVG drawing), a HEIC photo (which OpenCV does not
    decode) or an AVIF one, or another known format (a PDF, an archive, ...). ``None`` for the first bytes of a
    known image format (a damaged image), bytes of no known kind, or a file that cannot be opened."""
    try:
        head = read_head(path)
    except OSError:
        return None
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS | AVIF_BRANDS:
        if head[8:12] in HEIF_BRANDS:
            return "a HEIC/HEIF photo (the iPhone's format), which OpenCV does not decode: convert it to JPEG or PNG"
        return "an AVIF image that could not be decoded (damaged, or no AVIF decoder): convert it to JPEG or PNG"
    if head.startswith(IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    return describe_head(head)


def describe_unopened_video(path: str | Path) -> str | None:
    """What a video file OpenCV could not open looks like: :func:`describe_non_image`'s answer (a web page, an empty
    file, ...), or for an MP4/MOV file (``ftyp`` first) what its top-level boxes say: one that runs past the end of
    the file (cut short), or no ``moov`` box (the index, written last by many recorders). ``None`` otherwise."""
    looks = describe_non_image(path)
    if looks is not None:
        return looks
    try:
        size, head = Path(path).stat().st_size, read_head(path, 12)
    except OSError:
        return None
    if head[4:8] != b"ftyp":
        return None
    boxes, offset = [], 0
    with open(path, "rb") as f:
        while offset + 8 <= size:
            f.seek(offset)
            header = f.read(16)
            length, kind = int.from_bytes(header[:4], "big"), header[4:8].decode("latin-1")
            if length == 1 and len(header) == 16:
                length = int.from_bytes(header[8:16], "big")
            elif length == 0:
                length = size - offset
            if length < 8 or not (kind.isascii() and kind.isprintable()):
                return f"an MP4/MOV video with a damaged box header at byte {offset:,}"
            if offset + length > size:
                return (
                    f"an MP4/MOV video cut short: its '{kind}' box runs {offset + length - size:,} bytes past the "
                    f"end of the file ({size:,} bytes); copy or download it again"
                )
            boxes.append(kind)
            offset += length
    if "moov" not in boxes:
        return (
            "an MP4/MOV video without its index (no 'moov' box): cut short, or a recording that was not finished "
            f"(boxes: {', '.join(boxes)})"
        )
    return None
