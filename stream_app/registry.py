"""The model registry: a folder of encoder versions, each immutable once written.

    <registry>/<version>/encoder.onnx   the sequence encoder (dynamic batch and sequence length)
    <registry>/<version>/items.npy      item embedding table, float32 [items, dim]
    <registry>/<version>/items.json     the item ids of its rows
    <registry>/<version>/manifest.json  version, content hash, dims, training data fingerprint,
                                        validation Recall@20 / MRR@20, created_at

Which version serves is not a file here: it is announced on the control topic (`stream-app
models publish`), so every worker hears it without a restart. Pure file I/O, no torch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigError

FILES = ("encoder.onnx", "items.npy", "items.json")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


def content_hash(version_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in FILES:
        digest.update(name.encode())
        digest.update((version_dir / name).read_bytes())
    return digest.hexdigest()


def write_version(root: str | Path, staged: Path, manifest: dict[str, Any]) -> Path:
    """Move a staged folder holding FILES into the registry as a new version (atomic rename), with its
    manifest completed by the content hash. Returns the version's folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if not (staged / name).is_file():
            raise ValueError(f"staged model folder {staged} lacks {name}")
    manifest = dict(manifest, format=MANIFEST_FORMAT, content_hash=content_hash(staged))
    (staged / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    target = root / manifest["version"]
    if target.exists():
        raise ValueError(f"registry {root} already holds version {manifest['version']}")
    shutil.move(str(staged), target)  # a rename when staged inside the registry (staging_dir)
    return target


def staging_dir(root: str | Path) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".staging-", dir=root))


def versions(root: str | Path) -> list[dict[str, Any]]:
    """Every version's manifest, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.is_dir() and (child / MANIFEST).is_file() and not child.name.startswith("."):
            found.append(json.loads((child / MANIFEST).read_text()))
    return sorted(found, key=lambda m: (m["created_at"], m["version"]))


def open_version(root: str | Path, version: str, verify: bool = True) -> tuple[Path, dict[str, Any]]:
    """The folder and manifest of a version; with `verify`, its files must match the manifest's hash."""
    folder = Path(root) / version
    if not (folder / MANIFEST).is_file():
        known = ", ".join(m["version"] for m in versions(root)) or "none"
        raise ConfigError(f"model version {version!r} is not in the registry {root} (versions: {known}); "
                          f"train one with `stream-app train LOG --registry {root}`")
    manifest = json.loads((folder / MANIFEST).read_text())
    if verify and content_hash(folder) != manifest["content_hash"]:
        raise ConfigError(f"model version {version} in {root} does not match its manifest's content hash: "
                          "the files were changed after training; train or copy it again")
    return folder, manifest


def latest(root: str | Path) -> str | None:
    found = versions(root)
    return found[-1]["version"] if found else None
