"""The model registry: a folder of model versions, each immutable once written.

A version's manifest names its `kind`, which decides the files it holds (a manifest without one is a
sequence encoder, as every version was before content models):

  kind "sequence", the sequence encoder:
    <registry>/<version>/encoder.onnx       dynamic batch and sequence length
    <registry>/<version>/items.npy          item embedding table, float32 [items, dim]
    <registry>/<version>/items.json         the item ids of its rows
    <registry>/<version>/manifest.json      version, content hash, dims, training data fingerprint,
                                            validation Recall@20 / MRR@20, created_at
  kind "content", a pre-trained sentence encoder for item text:
    <registry>/<version>/text_encoder.onnx  token ids -> mean-pooled, L2-normalised embedding
    <registry>/<version>/tokenizer.json     its tokenizer (the `tokenizers` package)
    <registry>/<version>/manifest.json      version, content hash, base model, dim, max_length,
                                            pooling, opset, parity with torch at export, created_at

Which version serves is not a file here: it is announced on the control topic (`stream-app
models publish`), so every worker hears it without a restart. Pure file I/O, no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..config import ENV_PREFIX
from ..errors import ConfigError

FILES_OF_KIND = {
    "sequence": ("encoder.onnx", "items.npy", "items.json"),
    "content": ("text_encoder.onnx", "tokenizer.json"),
}
DEFAULT_KIND = "sequence"  # of manifests written before kinds existed
HOW_TO_MAKE = {"sequence": "train one with `stream-app train LOG --registry {root}`",
               "content": "export one with `stream-app content export --registry {root}`"}
MANIFEST = "manifest.json"
T = TypeVar("T")
#: A version is a folder name inside the registry: no path separators, no "..", nothing absolute.
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def checked_version(version: str) -> str:
    """`version` if it names a folder inside the registry, else ConfigError (a control record or a
    command line must not reach files outside it, e.g. with `../` or an absolute path)."""
    if not isinstance(version, str) or not VERSION_NAME.fullmatch(version) or ".." in version:
        raise ConfigError(f"{version!r} is not a model version name (letters, digits, '.', '_', '-'; "
                          "no path): see `stream-app models list`")
    return version
MANIFEST_FORMAT = 1
#: 2: the content hash covers the manifest too (it says how inputs are prepared: lengths, buckets, padding);
#: 1 (manifests written before): the model files only.
HASH_SCHEME = 2


def kind_of(manifest: dict[str, Any]) -> str:
    return manifest.get("kind", DEFAULT_KIND)


def files_of(kind: str) -> tuple[str, ...]:
    if kind not in FILES_OF_KIND:
        raise ConfigError(f"unknown model kind {kind!r}; the registry knows {', '.join(FILES_OF_KIND)}")
    return FILES_OF_KIND[kind]


def read_files(version_dir: Path, kind: str = DEFAULT_KIND) -> dict[str, bytes]:
    """The bytes of a version's files, each read once: a loader serves the bytes it hashed, so a file swapped between
    the check and the load cannot be served under the checked hash."""
    files = {}
    for name in files_of(kind):
        try:
            files[name] = (version_dir / name).read_bytes()
        except OSError as exc:
            raise ConfigError(f"model version {version_dir.name} in {version_dir.parent} cannot read its {name} "
                              f"({exc.strerror or exc}): train, export or copy the version again") from None
    return files


def content_hash(version_dir: Path, kind: str = DEFAULT_KIND, manifest: dict[str, Any] | None = None,
                 files: dict[str, bytes] | None = None) -> str:
    """SHA-256 of the version's files (`files`, as `read_files` gave them, or read now), and of its manifest (less the
    hash itself) when the manifest's `hash_scheme` is 2 or more. An edited manifest that drops its scheme hashes to the
    files alone: not what it was announced with."""
    files = read_files(version_dir, kind) if files is None else files
    digest = hashlib.sha256()
    for name in files_of(kind):
        digest.update(name.encode())
        digest.update(files[name])
    if manifest is not None and manifest.get("hash_scheme", 1) >= 2:
        described = {key: value for key, value in manifest.items() if key != "content_hash"}
        digest.update(MANIFEST.encode())
        digest.update(json.dumps(described, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()


def write_version(root: str | Path, staged: Path, manifest: dict[str, Any]) -> Path:
    """Move a staged folder holding the files of the manifest's kind into the registry as a new version
    (atomic rename), with its manifest completed by the content hash. Returns the version's folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    kind = kind_of(manifest)
    for name in files_of(kind):
        if not (staged / name).is_file():
            raise ValueError(f"staged model folder {staged} lacks {name}")
    manifest = dict(manifest, format=MANIFEST_FORMAT, hash_scheme=HASH_SCHEME)
    manifest["content_hash"] = content_hash(staged, kind, manifest)
    (staged / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    # mkdtemp made the folder for its owner alone: workers running as another user (compose's) must read it
    umask = os.umask(0)
    os.umask(umask)
    staged.chmod(0o777 & ~umask)
    target = root / checked_version(manifest["version"])
    if target.exists():
        same = _stored_hash(target) == manifest["content_hash"]
        publish = f"stream-app models publish {manifest['version']}" + (" --content" if kind == "content" else "")
        raise ValueError(f"registry {root} already holds version {manifest['version']}"
                         + (f" with the same files (exported twice): publish it with `{publish}`" if same else
                            " with other files: delete that folder to register this one under its name"))
    shutil.move(str(staged), target)  # a rename when staged inside the registry (staging_dir)
    return target


def holding_files_of(root: str | Path, staged: Path, same_recipe: Callable[[dict[str, Any]], bool],
                     kind: str = DEFAULT_KIND) -> dict[str, Any] | None:
    """The manifest of a version of `kind` whose files are byte for byte those staged and whose manifest
    `same_recipe` accepts (the settings workers read from it, such as an encoder's `dims.max_len`, can differ where
    the files do not), or None: a model trained again on the same log with the same settings and seed."""
    files = content_hash(staged, kind)
    for manifest in versions(root, kind):
        if not same_recipe(manifest):  # before hashing its files: most versions differ in their recipe
            continue
        try:
            if content_hash(Path(root) / manifest["version"], kind) == files:
                return manifest
        except ConfigError:  # a version with a file missing holds other files
            continue
    return None


def _stored_hash(folder: Path) -> str | None:
    try:
        return json.loads((folder / MANIFEST).read_text()).get("content_hash")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None


def staging_dir(root: str | Path) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".staging-", dir=root))


def validation_said(manifest: dict[str, Any]) -> str:
    """A sequence model's validation figures in a few words (n/a when its log held nothing out)."""
    validation = manifest.get("validation") or {}
    if validation.get("recall@20") is None:
        return "validation n/a"
    return f"validation Recall@20 {validation['recall@20']:.4f}, MRR@20 {validation['mrr@20']:.4f}"


def require_writable(root: str | Path) -> None:
    """A ConfigError unless `root` is a folder new versions can be written to (made if missing)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"the registry {root} is a file, not a folder: name the folder of model versions with "
                          "--registry or STREAM_APP_REGISTRY_DIR")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot make the registry folder {root} ({exc.strerror}): name another with --registry "
                          "or STREAM_APP_REGISTRY_DIR") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError(f"the registry folder {root} is not writable: name another with --registry or "
                          "STREAM_APP_REGISTRY_DIR")


def require_folder(root: str | Path) -> None:
    """A ConfigError unless `root` is a folder (the registry a user named, to be listed)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"the registry {root} is a file, not a folder: name the folder of model versions with "
                          "--registry or STREAM_APP_REGISTRY_DIR")
    if not root.exists():
        raise ConfigError(f"the registry folder {root} does not exist: name the folder of model versions with "
                          "--registry or STREAM_APP_REGISTRY_DIR, or train a model into it (`stream-app train LOG "
                          f"--registry {root}`)")


def read_manifest(folder: Path) -> dict[str, Any]:
    """A version's manifest, or ConfigError saying what is wrong with it (half-written, edited by hand)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"the manifest of model version {folder.name} in {folder.parent} cannot be read ({exc}): "
                          "delete the folder, or train, export or copy the version again") from None
    if not (isinstance(manifest, dict) and isinstance(manifest.get("version"), str)
            and isinstance(manifest.get("created_at"), str) and isinstance(manifest.get("content_hash"), str)):
        raise ConfigError(f"the manifest of model version {folder.name} in {folder.parent} lacks its version, "
                          "created_at or content_hash: delete the folder, or train, export or copy the version again")
    if manifest["version"] != folder.name:  # renamed or copied by hand: what a worker loads and says must be one name
        raise ConfigError(f"the folder {folder.name} in {folder.parent} holds model version {manifest['version']!r} "
                          "(its manifest's name, the one the workers report and recommendations carry): a version's "
                          f"folder must keep its name; rename it back to {manifest['version']} (or delete the copy)")
    return manifest


def versions(root: str | Path, kind: str | None = None, unreadable: list[str] | None = None) -> list[dict[str, Any]]:
    """Every version's manifest (of `kind` only, when given), oldest first. A folder whose manifest cannot
    be read is left out (and its error appended to `unreadable`, when given)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith(".") and not (child / MANIFEST).is_file():
            if unreadable is not None:  # a version whose manifest was deleted: said, not left out unsaid
                unreadable.append(f"the folder {child.name} in {root} holds no {MANIFEST}, so no version: delete the "
                                  "folder, or train, export or copy the version again")
            continue
        if child.is_dir() and not child.name.startswith("."):
            try:
                manifest = read_manifest(child)
            except ConfigError as exc:
                if unreadable is not None:
                    unreadable.append(str(exc))
                continue
            if kind is None or kind_of(manifest) == kind:
                found.append(manifest)
    return sorted(found, key=lambda m: (m["created_at"], m["version"]))


def open_version(root: str | Path, version: str, verify: bool = True, kind: str | None = None,
                 expected_hash: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The folder and manifest of a version, checked as `read_version` checks them."""
    folder, manifest, _ = read_version(root, version, verify, kind, expected_hash)
    return folder, manifest


def read_version(root: str | Path, version: str, verify: bool = True, kind: str | None = None,
                 expected_hash: str | None = None) -> tuple[Path, dict[str, Any], dict[str, bytes]]:
    """The folder, manifest and files' bytes of a version; with `verify`, its files must match the manifest's hash;
    with `kind`, it must be a model of that kind; with `expected_hash` (what a control record
    announced), its files must hash to that: the manifest sits beside the files, so whoever can change
    them can change it too, while the announcement comes from whoever may publish."""
    folder = Path(root) / checked_version(version)
    if not (folder / MANIFEST).is_file():
        known = ", ".join(m["version"] for m in versions(root, kind)) or "none"
        where = f"{root}" if Path(root).is_absolute() else f"{root} ({Path(root).resolve()}: a relative folder is read " \
            f"from where the process runs; set {ENV_PREFIX}REGISTRY_DIR to an absolute one every worker can read)"
        raise ConfigError(f"model version {version!r} is not in the registry {where} (versions: {known}); "
                          + HOW_TO_MAKE[kind or DEFAULT_KIND].format(root=root))
    manifest = read_manifest(folder)
    if kind is not None and kind_of(manifest) != kind:
        wanted = ", ".join(m["version"] for m in versions(root, kind)) or "none"
        raise ConfigError(f"model version {version!r} in {root} is a {kind_of(manifest)} model, not a {kind} model "
                          f"(its {kind} versions: {wanted}); " + HOW_TO_MAKE[kind].format(root=root))
    files = read_files(folder, kind_of(manifest))
    if verify or expected_hash is not None:
        found = content_hash(folder, kind_of(manifest), manifest, files)
        if verify and found != manifest["content_hash"]:
            raise ConfigError(f"model version {version} in {root} does not match its manifest's content hash: "
                              "the files were changed after it was written; train, export or copy it again")
        if expected_hash is not None and found != expected_hash:
            raise ConfigError(f"model version {version} in {root} does not match the content hash it was announced "
                              f"with ({expected_hash[:12]}..., its files: {found[:12]}...): its files changed after "
                              "it was published; publish it again if the change is meant")
    return folder, manifest, files


def loaded(model_class: Callable[..., T], folder: Path, manifest: dict[str, Any], *args: Any) -> T:
    """`model_class(folder, manifest, files, *args)` with the files' bytes `read_version` checked, or ConfigError
    naming the version: files that hash right can still be no model the runtime reads (a truncated graph hashed again, a manifest lacking a field), and the command that
    loads it must say so in one line, not with onnxruntime's or json's traceback."""
    try:
        return model_class(folder, manifest, *args)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"model version {folder.name} in {folder.parent} cannot be loaded ({type(exc).__name__}: "
                          f"{exc}): train, export or copy it again") from None


def latest(root: str | Path, kind: str | None = None) -> str | None:
    found = versions(root, kind)
    return found[-1]["version"] if found else None
