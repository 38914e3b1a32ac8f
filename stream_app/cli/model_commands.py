"""`stream-app models`: the registry's versions, announcing one to the workers, and what each worker serves; and
`stream-app train`, which makes a version."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path

from ..config import Settings
from ..errors import ConfigError, StreamAppError, described


def cmd_models(args: argparse.Namespace) -> int:
    from ..serving import registry
    from ..stream import model_control

    settings = Settings.from_env()
    workers_registry = settings.registry_dir
    if args.registry:
        settings = settings.replace(registry_dir=args.registry)
    if args.content and args.shadow:
        raise StreamAppError("give one of --content (the item text encoder) and --shadow (a sequence encoder scored "
                             "beside the live one), not both")
    if args.version and args.action in ("list", "status"):  # taken silently, it read as if it chose something
        raise StreamAppError(f"`models {args.action}` takes no VERSION ({args.version!r}): it lists every one; a "
                             "VERSION is for `models publish` (and `models withdraw`, to withdraw only that one)")
    if args.all and args.action != "status":
        raise StreamAppError(f"--all is for `models status` (the workers no longer running too), not `models "
                             f"{args.action}`")
    if args.action == "list":
        registry.require_folder(settings.registry_dir)
        unreadable: list[str] = []
        kind = "content" if args.content else "sequence" if args.shadow else None  # what those roles take
        found = registry.versions(settings.registry_dir, kind, unreadable=unreadable)
        for problem in unreadable:
            print(f"skipped: {problem}")
        if not found:
            print(f"no {kind + ' ' if kind else ''}models in {settings.registry_dir} ("
                  + ("export one with `stream-app content export`)" if kind == "content"
                     else "train one with `stream-app train LOG`)"))
        for m in found:
            print(listed(m) + damaged(settings.registry_dir, m))
        return 0
    if args.action == "status":
        return print_model_status(settings, show_all=args.all)
    role = "content" if args.content else "shadow" if args.shadow else "live"
    version = None
    if args.action == "publish":
        if not args.version:
            raise StreamAppError("`models publish` needs a VERSION (or `latest`); `stream-app models list` shows them")
        kind = "content" if role == "content" else "sequence"
        registry.require_folder(settings.registry_dir)  # a registry that is not there is said so, not "no model"
        version = registry.latest(settings.registry_dir, kind) if args.version == "latest" else args.version
        if version is None:
            raise StreamAppError(f"the registry {settings.registry_dir} holds no {kind} model to publish: "
                                 + ("export one with `stream-app content export`" if kind == "content" else
                                    "train one with `stream-app train LOG --registry ...`"))
        require_role_fits(settings.registry_dir, version, role)
    if args.action == "withdraw":
        published = announced(settings, role)
        if published is None:
            print(f"{role}: nothing is published as {role}, so nothing was withdrawn (`stream-app models status` "
                  "shows what the workers serve)")
            return 0
        if args.version and args.version != published:  # withdrawing whatever serves could take down another one
            raise StreamAppError(f"{args.version} is not what is published as {role} ({published} is): nothing was "
                                 f"withdrawn; `stream-app models withdraw{_ROLE_FLAG[role]}` withdraws the "
                                 "published one, whichever it is")
    model_control.publish(settings, role, version, workers_registry=workers_registry)
    print(f"{role}: {version or 'none'} (announced on {settings.topics.model_control})")
    if version is not None and role != "content":
        try:  # a look after the announcement: a broker that fails it now leaves the publish done, and said so above
            said = other_catalogue(settings, version)
        except Exception as exc:  # noqa: BLE001 - advice only
            said = f"note: the input topics could not be read to check the encoder's items against them ({exc!r})"
        if said:
            print(said, file=sys.stderr)
    return 0


_ROLE_FLAG = {"live": "", "shadow": " --shadow", "content": " --content"}


def announced(settings: Settings, role: str) -> str | None:
    """The version the control topic announces for `role` now (None: none, or withdrawn): its last record the
    workers act on (`model_control.valid_for_its_key`; one they refuse changes nothing)."""
    from ..stream.model_control import valid_for_its_key
    from ..tools.consume import read_to_end

    version = None
    for record in read_to_end(settings, settings.topics.model_control):
        if record.key == role.encode() and valid_for_its_key(record):
            version = json.loads(record.value)["version"]
    return version


def listed(m: dict) -> str:
    """A version's line in `models list`; a manifest that reads but lacks what the line shows (edited by hand, of
    another tool) is named and skipped like an unreadable one, not a traceback that hides the versions after it."""
    from ..serving import registry

    try:
        if registry.kind_of(m) == "content":
            return (f"{m['version']}  {m['created_at']}  content: {m['base_model']}, dim {m['dim']}, up to "
                    f"{m['max_length']} tokens, parity with torch {m['parity']['max_abs_diff']:.1e}")
        return (f"{m['version']}  {m['created_at']}  dim {m['dims']['embedding']}, {m['dims']['items']:,} items, "
                f"{registry.validation_said(m)}, trained on {m['training']['events']:,} events of "
                f"{m['training']['log']}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return (f"skipped: the manifest of model version {m['version']} lacks or mangles {exc}: delete the folder, or "
                "train, export or copy the version again")


#: Below this share of the stream's recent items known to an encoder, `models publish` asks whether it is this
#: stream's (as `evaluate --encoder` asks of a log)
KNOWN_ITEMS_FLOOR = 0.5


def other_catalogue(settings: Settings, version: str) -> str | None:
    """A warning when the sequence encoder knows few of the items of the input topics' last events: one trained on
    another shop's log recommends items this stream does not have (its candidates are its own table's)."""
    import orjson

    from ..serving import registry
    from ..tools.replay import input_tails

    _, _, files = registry.read_version(settings.registry_dir, version, verify=False)
    known = set(json.loads(files["items.json"]))
    seen: list[str] = []
    for record in input_tails(settings, records=200):
        try:
            item = orjson.loads(record.value).get("item_id")
        except (orjson.JSONDecodeError, TypeError, AttributeError):
            continue
        if isinstance(item, str):
            seen.append(item)
    share = sum(item in known for item in seen) / len(seen) if seen else 1.0
    if share >= KNOWN_ITEMS_FLOOR:
        return None
    return (f"warning: {version} knows the items of only {share:.0%} of the input topics' last {len(seen):,} events: "
            "was it trained on another catalogue? Its candidates are the items of its own table, which this stream "
            f"may not have; `stream-app evaluate LOG --encoder {version}` measures it, `stream-app models publish "
            "VERSION` puts another back")


def damaged(registry_dir: str, manifest: dict) -> str:
    """What `models list` adds to a version whose files do not load as the workers load them (their hash against its
    manifest's, a file missing): workers refuse it, a serving one at their next start."""
    from ..serving import registry

    try:
        registry.read_version(registry_dir, manifest["version"], verify=True)
    except ConfigError as exc:
        return f"\n  DAMAGED, workers refuse it: {exc}"
    return ""


def require_role_fits(registry_dir: str, version: str, role: str) -> None:
    """A version of the other kind than the role's said with the option that publishes it (the registry's own error
    said to train or export another model)."""
    from ..serving import registry

    try:
        kind = registry.kind_of(registry.read_manifest(Path(registry_dir) / registry.checked_version(version)))
    except StreamAppError:
        return  # missing or unreadable: the load says so, as the workers' would
    if kind == "content" and role != "content":
        raise StreamAppError(f"{version} is a content model (the item-text encoder), not a sequence encoder: publish "
                             f"it with `stream-app models publish {version} --content`")
    if kind != "content" and role == "content":
        raise StreamAppError(f"{version} is a sequence encoder, not a content model: publish it without --content "
                             f"(live) or with --shadow; `stream-app models list` shows the content versions")


def print_model_status(settings: Settings, show_all: bool = False) -> int:
    """Each worker's last outcome per role, as the workers reported it on the models.status topic; the rows of
    workers no longer running (by the live workers' keys in Redis, which must answer) only with `show_all`."""
    latest, set_aside = status_records(settings)
    if set_aside:  # said first: a worker of a later release may be among those not shown
        print(f"({len(set_aside)} record{'s' if len(set_aside) > 1 else ''} of {settings.topics.model_status} set "
              f"aside, the last at {set_aside[-1]}"
              + ("; one of another schema_version is read by `stream-app models status` of the release that wrote "
                 "it)" if any("schema_version" in why for why in set_aside) else ")"))
    if not latest:
        print(f"no model outcome on {settings.topics.model_status} yet: a worker reports one once a model is published "
              "(`stream-app models publish`; `stream-app status` shows the running workers)")
        return 0  # nothing to report is no failure
    running = None if show_all else running_workers(settings)
    shown = [s for s in latest.values() if running is None or s["worker_id"] in running]
    for status in sorted(shown, key=lambda r: (r["worker_id"], r["role"])):
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(status["at"] / 1000))
        line = f"{status['worker_id']}  {status['role']:<7} {status['outcome']:<9} {status['version'] or 'none'}  {when}"
        print(line + (f"  ({status['reason']})" if status["reason"] else ""))
    gone = {s["worker_id"] for s in latest.values()} - {s["worker_id"] for s in shown}
    if len(gone) == 1:
        print("(1 worker that is no longer running left out; --all shows it)")
    elif gone:
        print(f"({len(gone)} workers that are no longer running left out; --all shows them)")
    return 0


#: What `models status` prints of a status record (a record of a later release within the same schema_version may add
#: fields: they are passed over, not refused).
_STATUS_FIELDS = frozenset(("worker_id", "role", "outcome", "version", "reason", "at"))


def status_records(settings: Settings) -> tuple[dict[bytes, dict], list[str]]:
    """The latest status record per key of the models.status topic, and where each record set aside was read with
    why: not JSON, of a schema_version this release does not read (none: 1, as workers before 2026-12-06 wrote
    them), or without what the command prints. Such a record was a traceback that hid every worker's outcome."""
    from ..contracts import version_not_read
    from ..tools.consume import read_to_end

    latest: dict[bytes, dict] = {}
    set_aside: list[str] = []
    for record in read_to_end(settings, settings.topics.model_status):
        try:
            status = json.loads(record.value)
        except (TypeError, ValueError):
            status = None
        if not isinstance(status, dict):
            why: str | None = "not a JSON object"
        elif (why := version_not_read(status)) is None and not _STATUS_FIELDS <= status.keys():
            why = f"it lacks {', '.join(sorted(_STATUS_FIELDS - status.keys()))}"
        if why is None:
            latest[record.key] = status
        else:  # the key's earlier record is not its latest outcome: not shown as if it were
            latest.pop(record.key, None)
            where = (f"{getattr(record, 'topic', settings.topics.model_status)}[{getattr(record, 'partition', 0)}]"
                     f"@{getattr(record, 'offset', '?')}")
            set_aside.append(f"{where} ({why})")
    return latest, set_aside


def running_workers(settings: Settings) -> set[str]:
    """The ids of the workers running now (their status keys in Redis). Redis not answering is an error: listing
    every worker that ever reported instead passed the gone ones off as running."""
    import redis

    from ..store.redis_store import worker_statuses
    from .commands import redis_trouble

    without_redis = ("(`stream-app models status --all` lists every worker's outcome, running or not, without asking "
                     "Redis)")
    try:
        url = settings.require_redis()
    except ConfigError as exc:
        raise ConfigError(f"{exc} {without_redis}") from None
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
    try:
        return {status["worker_id"] for status in worker_statuses(client, settings.namespace)}
    except redis.RedisError as exc:
        raise StreamAppError(f"{redis_trouble(settings, exc)} {without_redis}") from None
    finally:
        client.close()


def check_train_options(args: argparse.Namespace, settings: Settings, registry_dir: str) -> None:
    """What would fail or mislead only after the training, said before it."""
    if args.shadow and not args.publish:
        raise StreamAppError("--shadow names the role --publish announces the model in: add --publish")
    if args.max_len > settings.recent_max:
        raise StreamAppError(f"--max-len {args.max_len} is over the {settings.recent_max} events a profile keeps "
                             "(STREAM_APP_RECENT_MAX): the workers could not give the encoder what it was trained on")
    if args.publish:
        settings.require_kafka()
        if Path(registry_dir).resolve() != Path(settings.registry_dir).resolve():
            raise StreamAppError(f"the workers load models from {settings.registry_dir} (STREAM_APP_REGISTRY_DIR), "
                                 f"not {registry_dir}: --publish would announce a version they cannot find. Train "
                                 "into theirs, or set STREAM_APP_REGISTRY_DIR for them and here")


def tried(model, settings: Settings | None = None):
    """`model` once it has run on the workers' trial input (and, given `settings`, fits them): the workers refuse a
    version that fails it, and an evaluate or content command on it was a traceback from inside onnxruntime."""
    from ..stream.model_control import tried as workers_trial

    try:
        if settings is None:
            model.trial()
        else:
            workers_trial(model, settings)
    except Exception as exc:
        raise StreamAppError(f"model {model.version} cannot serve, as the workers would refuse it: {exc}") from None
    return model


def require_train_extra(what: str, modules: tuple[str, ...]) -> None:
    """Refuse before any work if a package the train extra brings is missing (onnx is needed only at the export,
    after the training: its absence there was a traceback at the end)."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise StreamAppError(f"{what} needs {', '.join(missing)}, which this environment lacks: install the train "
                             "extra, `.venv/bin/pip install -e '.[train]'`")
    for name in modules:  # installed but broken (a missing shared library, a half-finished upgrade): was a traceback
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise StreamAppError(f"{what} needs {name}, which is installed but cannot be imported ({described(exc)}): "
                                 "reinstall the train extra, `.venv/bin/pip install --force-reinstall -e '.[train]'`"
                                 ) from None


def cmd_train(args: argparse.Namespace) -> int:
    require_train_extra("training", ("torch", "onnx"))
    from stream_app_train.train import TrainConfig, train

    from ..serving.registry import validation_said
    from ..stream import model_control
    from ..tools.replay import gate

    settings = Settings.from_env()
    registry_dir = args.registry or settings.registry_dir
    check_train_options(args, settings, registry_dir)
    config = TrainConfig(dim=args.dim, hidden=args.hidden, max_len=args.max_len, epochs=args.epochs,
                         train_fraction=args.train_fraction, seed=args.seed, limit=args.limit)
    try:
        manifest = train(args.log, args.format, registry_dir, config,
                         progress=lambda line: print(line, file=sys.stderr), refusal=gate(settings))
    except ValueError as exc:
        raise StreamAppError(str(exc)) from None
    done = (f"trained the model {manifest['version']} holds (registered {manifest['created_at']}), not registered "
            "again" if manifest.get("already_registered") else
            f"trained {manifest['version']} in {manifest['training']['seconds']:.1f}s")
    print(f"{done}: {validation_said(manifest)} ({manifest['validation']['examples']:,} held-out events); "
          f"registry {registry_dir}")
    if args.publish:
        role = "shadow" if args.shadow else "live"
        model_control.publish(settings.replace(registry_dir=registry_dir), role, manifest["version"])
        print(f"published {manifest['version']} as {role} on {settings.topics.model_control}")
    return 0


def cmd_items(args: argparse.Namespace) -> int:
    from ..tools.catalogue import load_items, wait_indexed

    settings = Settings.from_env()
    summary = load_items(settings, args.file, args.format)
    print("\n".join(summary.lines()), flush=True)  # the load is done: said also when the wait then fails
    if args.wait is not None and summary.through is not None:
        print(wait_indexed(settings, summary.through, args.wait))
    return 0
