"""Faust's folder for one worker process. The tables live in memory and in their changelogs, so the
folder is a temporary one; it is named by the process id, so that a worker that starts removes the
folders of this host's processes that are gone (a killed worker cannot remove its own).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("stream_app.datadir")

_NAME = re.compile(r"faust-pid(\d+)-")


def faust_datadir(group_id: str, root: str | None = None) -> str:
    """A new folder for this process, after removing those of processes that are gone."""
    folder = Path(root or tempfile.gettempdir())
    removed = remove_abandoned(folder)
    if removed:
        log.info("removed %d Faust folders of workers that are gone from %s", removed, folder)
    return tempfile.mkdtemp(prefix=f"faust-pid{os.getpid()}-{group_id}-", dir=folder)


def remove_abandoned(root: Path) -> int:
    """Remove the folders `faust_datadir` made under `root` for processes no longer running, only
    this user's (another user's processes cannot be asked). Returns how many went."""
    removed = 0
    for path in root.glob("faust-pid*-*"):
        found = _NAME.match(path.name)
        if found is None or not path.is_dir() or _owner(path) != os.getuid() or _running(int(found[1])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += not path.exists()
    return removed


def _owner(path: Path) -> int | None:
    """The folder's owner, or None when it went meanwhile (another worker starting removed it)."""
    try:
        return path.stat().st_uid
    except FileNotFoundError:
        return None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # running, as another user
        return True
    return True
