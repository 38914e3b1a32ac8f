"""`stream-app models`: the registry's versions, announcing one to the workers, and what each worker serves."""

from __future__ import annotations

import argparse
import json
import time

from ..config import Settings
from ..errors import StreamAppError


def cmd_models(args: argparse.Namespace) -> int:
    from ..serving import registry
    from ..stream import model_control

    settings = Settings.from_env()
    if args.registry:
        settings = settings.replace(registry_dir=args.registry)
    if args.action == "list":
        registry.require_folder(settings.registry_dir)
        unreadable: list[str] = []
        found = registry.versions(settings.registry_dir, unreadable=unreadable)
        for problem in unreadable:
            print(f"skipped: {problem}")
        if not found:
            print(f"no models in {settings.registry_dir} (train one with `stream-app train LOG`)")
        for m in found:
            if registry.kind_of(m) == "content":
                print(f"{m['version']}  {m['created_at']}  content: {m['base_model']}, dim {m['dim']}, up to "
                      f"{m['max_length']} tokens, parity with torch {m['parity']['max_abs_diff']:.1e}")
                continue
            print(f"{m['version']}  {m['created_at']}  dim {m['dims']['embedding']}, {m['dims']['items']:,} items, "
                  f"validation Recall@20 {m['validation']['recall@20']:.4f} MRR@20 {m['validation']['mrr@20']:.4f}, "
                  f"trained on {m['training']['events']:,} events of {m['training']['log']}")
        return 0
    if args.action == "status":
        return print_model_status(settings)
    role = "content" if args.content else "shadow" if args.shadow else "live"
    version = None
    if args.action == "publish":
        if not args.version:
            raise StreamAppError("`models publish` needs a VERSION (or `latest`); `stream-app models list` shows them")
        kind = "content" if role == "content" else "sequence"
        version = registry.latest(settings.registry_dir, kind) if args.version == "latest" else args.version
        if version is None:
            raise StreamAppError(f"the registry {settings.registry_dir} holds no model to publish")
    model_control.publish(settings, role, version)
    print(f"{role}: {version or 'none'} (announced on {settings.topics.model_control})")
    return 0


def print_model_status(settings: Settings) -> int:
    """Each worker's last outcome per role, as the workers reported it on the models.status topic."""
    from ..tools.consume import read_to_end

    latest: dict[bytes, dict] = {}
    for record in read_to_end(settings, settings.topics.model_status):
        latest[record.key] = json.loads(record.value)
    if not latest:
        print(f"no worker has reported on {settings.topics.model_status} yet: start one (`stream-app worker`) "
              "and publish a model (`stream-app models publish`)")
        return 1
    for status in sorted(latest.values(), key=lambda r: (r["worker_id"], r["role"])):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(status["at"] / 1000))
        line = f"{status['worker_id']}  {status['role']:<7} {status['outcome']:<9} {status['version'] or 'none'}  {when}"
        print(line + (f"  ({status['reason']})" if status["reason"] else ""))
    return 0
