"""Where the CLI keeps its state: the folder (`STREAM_APP_STATE_DIR`) and the runtime file in which `stream-app up`
records the embedded services' endpoints and processes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from .errors import ConfigError


def state_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Folder of the runtime file and the embedded services' logs."""
    explicit = environ.get("STREAM_APP_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "stream-app"


def runtime_file(environ: Mapping[str, str] = os.environ) -> Path:
    return state_dir(environ) / "runtime.json"


def serve_file(pid: int, environ: Mapping[str, str] = os.environ) -> Path:
    """Where a running `stream-app serve` says where it listens and which Redis it reads, for `down` to name it."""
    return state_dir(environ) / f"serve-{pid}.json"


def running_serves(environ: Mapping[str, str] = os.environ) -> list[dict[str, object]]:
    """The `stream-app serve` processes alive, as they recorded themselves (the files of gone ones removed)."""
    found = []
    for path in sorted(state_dir(environ).glob("serve-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("pid"), int) and process_alive(record["pid"]):
            found.append(record)
        else:
            path.unlink(missing_ok=True)
    return found


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still "exists": look at its state
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return True


def up_running(embedded: Mapping[str, object]) -> bool:
    """Is any process `stream-app up` recorded in its runtime file alive (the file is not one a crash or a
    reboot left behind)? One alone is enough: `up` brings a lost Redis back beside a live broker."""
    pids = embedded.get("pids")
    return isinstance(pids, list) and any(isinstance(pid, int) and process_alive(pid) for pid in pids)


def read_runtime_file(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    path = runtime_file(environ)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:  # garbled: `down` removes it
        raise ConfigError(f"cannot read the runtime file {path}: {exc}; run `stream-app down` then `stream-app up`") from exc
    except OSError as exc:  # the folder itself cannot be used: `down` would fail the same way
        raise ConfigError(unusable_state_dir(exc, environ)) from exc


def unusable_state_dir(exc: OSError, environ: Mapping[str, str] = os.environ) -> str:
    """What to tell the user when the state folder cannot be read or written."""
    return (f"cannot use the state folder {state_dir(environ)} ({exc.strerror or exc}: {exc.filename or ''}): set "
            "STREAM_APP_STATE_DIR to a folder this user can write")
