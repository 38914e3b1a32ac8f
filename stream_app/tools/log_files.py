"""Recorded log files as files: opened (gzip or plain, UTF-8 with a Latin-1 fallback), their non-blank lines,
and the checks every reader makes first (a file, not empty, not an archive it cannot read)."""

from __future__ import annotations

import codecs
import csv
import gzip
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from ..errors import InputFileError


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def _latin1_fallback(error: UnicodeDecodeError) -> tuple[str, int]:
    """The bytes that are not UTF-8, read as Latin-1 (some Online Retail csv copies are ISO-8859-1); the rest of
    the file stays UTF-8, so one stray byte does not change every other non-ASCII id."""
    return error.object[error.start:error.end].decode("latin-1"), error.end


codecs.register_error("stream-app-latin-1", _latin1_fallback)


def open_text(path: Path) -> IO[str]:
    """The file as text for the csv module, decompressed if it is gzipped: UTF-8 (a byte-order mark, as
    Excel's "CSV UTF-8" writes, dropped), any byte that is not UTF-8 read as Latin-1. No pass before."""
    if is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="stream-app-latin-1", newline="")
    return open(path, "r", encoding="utf-8-sig", errors="stream-app-latin-1", newline="")


def numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Numbered non-blank lines, without their line ends (nor a byte-order mark before the first)."""
    with open_binary(path) as fh:
        for line, raw in enumerate(fh, 1):
            raw = raw.rstrip(b"\r\n")
            if line == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            if raw.strip():
                yield line, raw


def check_file(path: Path) -> None:
    """Every reader's first check: `path` is a file with something in it, else an error saying what it is."""
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory, not a file; give the file itself")
    if not path.exists():
        raise InputFileError(f"{path}: no such file")
    if not path.is_file():
        raise InputFileError(f"{path}: not a regular file; give a file")
    try:
        if path.stat().st_size == 0:
            raise InputFileError(f"{path}: the file is empty")
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise InputFileError(f"{path}: cannot be read ({exc.strerror or exc}): check its permissions (this command "
                             "runs as a user who must be able to read it)") from None
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputFileError(f"{path}: a UTF-16 text file (as Excel's \"Unicode Text\" saves): save it as CSV "
                             "UTF-8 and give that file")
    if _is_workbook(path, head):
        raise InputFileError(f"{path}: an Excel workbook: save it as CSV (CSV UTF-8) and give that file")
    if head.startswith(b"PAR1") or path.suffix.lower() == ".parquet":
        raise InputFileError(f"{path}: a Parquet file (as OTTO's data is shared on Kaggle): write it out as JSON lines "
                             "or CSV (pandas: read_parquet, then to_json(orient='records', lines=True) or to_csv) "
                             "and give that file")
    for magic, kind in _ARCHIVES:
        if head.startswith(magic):
            raise InputFileError(f"{path}: a {kind} archive (as the data set may be published): unpack it and give the "
                                 "file inside it (plain or gzipped files are read)")


def _is_workbook(path: Path, head: bytes) -> bool:
    """An Excel workbook (how UCI publishes Online Retail): named .xlsx or .xls, a zip holding [Content_Types].xml
    (Office Open XML), or an OLE2 file (the older .xls)."""
    if path.suffix.lower() in (".xlsx", ".xls") or head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return True
    if not head.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return "[Content_Types].xml" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


#: Magic bytes of archives a data set comes in that are not read as such (gzip is)
_ARCHIVES = ((b"PK\x03\x04", "zip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"7z\xbc\xaf\x27\x1c", "7-Zip"))


def holds_only_blank_lines(path: Path) -> bool:
    return next(numbered_lines(path), None) is None


@contextmanager
def reading_as(path: str | Path, fmt: str) -> Iterator[None]:
    """A file the reader cannot decode (not UTF-8, not csv, a truncated or corrupt .gz) as an error
    naming the file and the format, instead of the decoder's exception."""
    try:
        yield
    except (UnicodeDecodeError, csv.Error, OSError,  # OSError: a read that failed (a disk, a network mount)
            EOFError, gzip.BadGzipFile, zlib.error) as exc:  # the last three: a truncated or corrupt .gz
        damaged = " (the gzip file is truncated or damaged: download or copy it again)" \
            if isinstance(exc, (EOFError, gzip.BadGzipFile, zlib.error)) else ""
        raise InputFileError(f"{path}: cannot be read as {fmt} ({exc}){damaged}") from exc
