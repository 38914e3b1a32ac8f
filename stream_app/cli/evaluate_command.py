"""`stream-app evaluate`: its options checked, the pass run, the table printed and the reports written."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import Settings
from ..errors import StreamAppError
from .commands import _load_content, _load_encoder


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluate.prequential import evaluate_log
    from ..evaluate.report import render
    from ..evaluate.tables import table, via_kafka_table
    from ..evaluate.via_kafka import evaluate_via_kafka
    from ..tools.synth import truth_path

    _refuse_ignored_options(args)
    if (args.processes or 1) > 1 and (args.encoder or args.shadow):
        raise StreamAppError("--processes forks the pass, and a forked process cannot use the sequence encoder's "
                             "onnxruntime session: leave out --processes, or --encoder and --shadow")
    name = report_name(args)
    if args.via_kafka:
        json_path = _writable(args.json, f"evaluation-via-kafka-{name}.json")
        _refuse_overwriting_inputs(args, {"--json": json_path})
        settings = Settings.from_env()
        if args.registry:
            settings = settings.replace(registry_dir=args.registry)
        content = _load_content(settings, args.items, args.items_format, args.content)
        result = evaluate_via_kafka(args.log, args.format, args.k, args.rate, workers=args.workers,
                                    max_idle_ms=args.max_idle_ms, busy=args.busy, limit=args.limit,
                                    timeout=args.timeout, items=(args.items, args.items_format) if content else None,
                                    content=content, registry_dir=settings.registry_dir,
                                    baselines=not args.no_baselines, light=args.light, keep=args.keep,
                                    judge_from=args.judge_from, processes=args.processes or 1,
                                    variants=not args.no_variants, progress=True)
        print(via_kafka_table(result))
        _write_json(result, json_path, args)
        return 0

    json_path = _writable(args.json, f"evaluation-{name}.json")
    page = _writable(args.html, f"evaluation-{name}.html")
    if Path(json_path).resolve() == Path(page).resolve():
        raise StreamAppError(f"--json and --html name the same file ({page}): the report would overwrite the "
                             "results; give two paths")
    truth = args.truth
    if truth is None and truth_path(args.log).is_file():
        truth = truth_path(args.log)
    _refuse_overwriting_inputs(args, {"--json": json_path, "--html": page}, truth)
    settings = Settings.from_env()
    if args.batch:
        settings = settings.replace(batch_max=args.batch)
    if args.registry:
        settings = settings.replace(registry_dir=args.registry)
    encoder, shadow = _load_encoder(settings, args.encoder), _load_encoder(settings, args.shadow)
    content = _load_content(settings, args.items, args.items_format, args.content)
    try:
        result = evaluate_log(args.log, args.format, settings, args.k, truth, encoder=encoder, shadow=shadow,
                              limit=args.limit, content=content, light=args.light, judge_from=args.judge_from,
                              tune_baselines=args.tune_baselines, processes=args.processes or 1,
                              variants=not args.no_variants, progress=True,
                              **({"run_events": args.sort_in_memory} if args.sort_in_memory else {}))
    except KeyboardInterrupt:  # exit status 130 said nothing of what became of the pass
        print("\ninterrupted: no table and no report written (the pass scores the whole log before it writes "
              "any; --limit N evaluates the log's first N events, --light fewer rows)", file=sys.stderr)
        raise
    print(table(result))
    _write_json(result, json_path, args)
    _write(page, render(result).encode())
    print(f"report: {page}")
    return 0


#: evaluate's options that act only beside another one (the parser leaves them out unless given, so an
#: explicit default is told apart from none): option -> (the one it needs, its default)
_NEEDS = {"no_baselines": ("via_kafka", False), "keep": ("via_kafka", False), "rate": ("via_kafka", None),
          "workers": ("via_kafka", 1), "max_idle_ms": ("via_kafka", 2000), "busy": ("via_kafka", False),
          "timeout": ("via_kafka", 900.0), "items_format": ("items", "jsonl"), "content": ("items", "latest")}
#: ... and those the run through Kafka does not take (None unless given)
_NOT_VIA_KAFKA = ("batch", "truth", "encoder", "shadow", "html", "sort_in_memory", "tune_baselines")


def _refuse_ignored_options(args: argparse.Namespace) -> None:
    """An option that would be ignored is an error: the user meant something by it. Then the options
    not given take their defaults."""
    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    for name, (needed, _default) in _NEEDS.items():
        if hasattr(args, name) and not getattr(args, needed):
            raise StreamAppError(f"{flag(name)} acts only with {flag(needed)}: add {flag(needed)}, or leave "
                                 f"{flag(name)} out")
    if args.via_kafka:
        for name in _NOT_VIA_KAFKA:
            if getattr(args, name) is not None:
                raise StreamAppError(f"{flag(name)} acts only in process: leave out --via-kafka, or {flag(name)}")
        if getattr(args, "no_baselines", False):
            for name in ("light", "no_variants"):
                if getattr(args, name):
                    raise StreamAppError(f"{flag(name)} chooses among the rows --no-baselines leaves out: give one "
                                         "of them")
    for name, (_needed, default) in _NEEDS.items():
        if not hasattr(args, name):
            setattr(args, name, default)


def _log_name(log: str) -> str:
    """The log's file name without its format and compression suffixes (online_retail.csv.gz: online_retail)."""
    name = Path(log).name
    for suffix in (".gz", ".jsonl", ".json", ".csv"):
        name = name.removesuffix(suffix)
    return name or "log"


def report_name(args: argparse.Namespace) -> str:
    """The default reports' name: the log's, and what makes a run differ (a quick `--limit` run must not
    overwrite the whole log's reports)."""
    return (f"{_log_name(args.log)}{f'-first{args.limit}' if args.limit else ''}{'-light' if args.light else ''}"
            f"{'-no-variants' if getattr(args, 'no_variants', False) else ''}"
            f"{f'-{args.encoder}' if args.encoder else ''}"
            f"{f'-shadow-{args.shadow}' if getattr(args, 'shadow', None) else ''}"
            f"{f'-items-{_log_name(args.items)}' if getattr(args, 'items', None) else ''}"
            f"{f'-content-{args.content}' if getattr(args, 'items', None) and args.content != 'latest' else ''}"
            f"{f'-judged-from-{args.judge_from:g}' if getattr(args, 'judge_from', None) else ''}"
            f"{f'-tuned-{args.tune_baselines:g}' if getattr(args, 'tune_baselines', None) else ''}")


def _writable(path: str | None, default_name: str) -> Path:
    """Where a report goes (default: reports/default_name), checked before the run (a long evaluation
    must not end in a path it cannot write)."""
    out = Path(path) if path else Path("reports") / default_name
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StreamAppError(f"cannot make the folder of {out} ({exc}): pick another path") from None
    if out.is_dir():
        raise StreamAppError(f"cannot write {out} (a folder): pick another path")
    existed = out.exists()
    if existed and not path:  # another log of the same file name, or the same log's earlier run
        print(f"note: {out} holds an earlier run's report and will be replaced if this run ends well (--json / "
              "--html keep both)", file=sys.stderr)
    try:
        with open(out, "ab"):  # as the write will: permissions alone do not tell (root, /proc)
            pass
    except OSError as exc:
        raise StreamAppError(f"cannot write {out} ({exc}): pick another path") from None
    if not existed:
        out.unlink()
    return out


def _refuse_overwriting_inputs(args: argparse.Namespace, outputs: dict[str, Path],
                               truth: str | Path | None = None) -> None:
    """An error when a report (`outputs`: option -> path) would be written over a file the run reads (the log, the
    catalogue, the ground truth): a misplaced --json or --html replaced a user's log with the results, unsaid."""
    inputs = {"the log": args.log, "the catalogue (--items)": args.items, "the ground truth": truth or args.truth}
    for option, out in outputs.items():
        for read, given in inputs.items():
            if given and _same_file(out, Path(given)):
                raise StreamAppError(f"{option} {out} is {read} this run reads: the report would overwrite it; give "
                                     f"{option} another path")


def _same_file(one: Path, other: Path) -> bool:
    try:
        return one.samefile(other)  # a link or another spelling of the same file too
    except OSError:  # one of them does not exist (yet): the same path or not
        return one.resolve() == other.resolve()


def _write(out: Path, data: bytes) -> None:
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise StreamAppError(f"cannot write {out} ({exc}): pick another path") from None


def _write_json(result: dict, out: Path, args: argparse.Namespace) -> None:
    import orjson

    from .. import __version__

    # the command's options and release (the STREAM_APP_* settings it read are not among them)
    options = {name: value for name, value in sorted(vars(args).items()) if not callable(value)}
    run = orjson.loads(orjson.dumps({"release": __version__, "options": options}, default=str))
    _write(out, orjson.dumps({**result, "run": run}, option=orjson.OPT_INDENT_2))
    print(f"\nfull results: {out}")
