"""One-off runs (demo, bench, evaluate --via-kafka) clean up their folder under the state directory,
unless asked to keep it or the run failed: then its logs stay, and the run says where."""

from contextlib import nullcontext

import pytest

from stream_app.errors import ServiceTimeout
from stream_app.tools import processes


class NoServices:
    """Stands in for the embedded broker and Redis: the folder's fate does not depend on them."""

    kafka_bootstrap_servers = "127.0.0.1:1"
    redis_url = "redis://127.0.0.1:1/0"
    stopped = 0

    @classmethod
    def start(cls, log_dir):
        (log_dir / "broker.log").write_text("broker started\n")
        return cls()

    def stop(self):
        NoServices.stopped += 1


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setattr(processes, "Embedded", NoServices)
    monkeypatch.setattr(processes, "ensure_topics", lambda settings: None)
    return {"STREAM_APP_STATE_DIR": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": "", "REDIS_URL": ""}


def test_a_run_that_ends_well_removes_its_folder(state, tmp_path, capsys):
    with processes.one_off_run("demo", state) as run:
        assert run.log_dir.parent == tmp_path and (run.log_dir / "broker.log").is_file()
    assert not run.log_dir.exists() and capsys.readouterr().err == ""


def test_a_kept_run_keeps_its_folder_and_says_where(state, capsys):
    with processes.one_off_run("bench", state, keep=True) as run:
        pass
    assert (run.log_dir / "broker.log").is_file()
    assert f"stream-app bench: this run's folder is kept (--keep): {run.log_dir}" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["raised", "failed"])
def test_a_run_that_fails_keeps_its_logs_and_says_where(state, capsys, how):
    stopped = NoServices.stopped
    with pytest.raises(ServiceTimeout) if how == "raised" else nullcontext():
        with processes.one_off_run("evaluate", state) as run:
            if how == "raised":
                raise ServiceTimeout("workers not ready within 60s")
            run.failed = True  # as the demo does on a timeout it reports itself
    assert (run.log_dir / "broker.log").is_file() and NoServices.stopped == stopped + 1
    assert f"stream-app evaluate: the run did not end well; its logs are kept in {run.log_dir}" in \
        capsys.readouterr().err


def test_keep_reaches_the_run_from_the_command_line(monkeypatch):
    from stream_app.cli.main import main
    from stream_app.errors import StreamAppError
    from stream_app.tools import demo

    asked = []

    def one_off_run(label, keep=False):
        asked.append((label, keep))
        raise StreamAppError("stop here: no services in this test")

    monkeypatch.setattr(demo, "one_off_run", one_off_run)
    assert main(["demo"]) == 2 and main(["demo", "--keep"]) == 2
    assert asked == [("demo", False), ("demo", True)]


def test_a_run_on_services_the_user_runs_removes_its_topics_and_keys(services, tmp_path):
    """The demo or bench beside `stream-app up` (or a real cluster) ran under a namespace of its own and
    left its topics and Redis keys there."""
    import redis
    from kafka.admin import KafkaAdminClient

    env = {"STREAM_APP_STATE_DIR": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": services["KAFKA_BOOTSTRAP_SERVERS"],
           "REDIS_URL": services["REDIS_URL"]}
    client = redis.Redis.from_url(services["REDIS_URL"])
    with processes.one_off_run("demo", env) as run:
        namespace = run.settings.namespace
        client.set(f"{namespace}worker:w1", b"{}")
        admin = KafkaAdminClient(bootstrap_servers=services["KAFKA_BOOTSTRAP_SERVERS"])
        assert any(t.startswith(namespace) for t in admin.list_topics())
    assert not [t for t in admin.list_topics() if t.startswith(namespace)]
    admin.close()
    assert not list(client.scan_iter(match=f"{namespace}*"))
