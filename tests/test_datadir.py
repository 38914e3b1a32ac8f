"""Faust's folders: a worker that starts removes those of workers that are gone."""

import os
import subprocess
import sys
from pathlib import Path

from stream_app.stream.datadir import faust_datadir


def test_a_worker_s_folder_is_named_by_its_process_and_those_of_processes_gone_are_removed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(gone.stdout)
    abandoned = tmp_path / f"faust-pid{dead_pid}-group-abc123"
    (abandoned / "v1" / "tables").mkdir(parents=True)
    running = tmp_path / f"faust-pid{os.getppid()}-group-def456"  # this test's parent process: running
    running.mkdir()
    earlier_layout = tmp_path / "faust-group-ghi789"  # no process id in the name: never touched
    earlier_layout.mkdir()

    folder = Path(faust_datadir("group", str(tmp_path)))

    assert folder.is_dir() and folder.name.startswith(f"faust-pid{os.getpid()}-group-")
    assert not abandoned.exists()
    assert running.is_dir() and earlier_layout.is_dir()


def test_a_folder_another_starting_worker_removes_first_is_passed_over(tmp_path, monkeypatch):
    # Two workers starting together both find the same abandoned folder; the one that looks second
    # finds it listed but gone by the time it asks whose it is.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    vanished = tmp_path / f"faust-pid{int(gone.stdout)}-group-abc123"
    vanished.mkdir()
    seen_as_folder = Path.is_dir

    def removed_by_the_other_worker_just_after(path):
        was_folder = seen_as_folder(path)
        if path == vanished:
            path.rmdir()
        return was_folder

    monkeypatch.setattr(Path, "is_dir", removed_by_the_other_worker_just_after)

    folder = Path(faust_datadir("group", str(tmp_path)))

    assert folder.name.startswith(f"faust-pid{os.getpid()}-group-")
    assert not vanished.exists()
