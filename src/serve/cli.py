"""Console scripts ``shopformer-serve`` and ``shopformer-recommend`` (``key=value`` arguments, no Hydra).

    shopformer-serve bundle=PATH|runs:/..|models:/.. [host=127.0.0.1] [port=8000] [threads=1]
        [workers=1] [batching=loop|thread|off] [max_batch=64] [max_wait_ms=2.0]
        [max_body_bytes=8388608] [policy=greedy|epsilon_greedy|softmax|thompson] [epsilon=0.1]
        [temperature=1.0] [top_n=20] [log_dir=DIR] [log_flush_s=1.0] [log_writer=process|thread]
        [ab.bundle=PATH] [ab.split=50/50]
    shopformer-recommend bundle=... input=sessions.parquet output=recs.parquet [k=10] [batch_size=256]
        [filters='{"in_stock": true}'] (business rules as in the HTTP body, a JSON object; see serve/rules.py)
    shopformer-recommend task=journey bundle=... input=sessions.parquet output=journey_scores.parquet
        (one row per session: next-event-type, conversion and abandonment probabilities; see serve/journey.py)

Errors a user can fix (missing file or column, bad bundle, bad argument) print one line on stderr
and exit with status 2; set ``SHOPFORMER_DEBUG=1`` for a traceback of unexpected ones.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from shopformer.errors import USAGE_EXIT_CODE, ConfigError, RequestError, UserError, one_line
from shopformer.serve.batch_scoring import (
    InputError,
    progress_bar,
    read_sessions,
    score_journey_table,
    score_sessions,
    write_recommendations,
)
from shopformer.serve.limits import MAX_BODY_BYTES
from shopformer.serve.micro_batching import MAX_WAIT_MS, SETTINGS
from shopformer.serve.policies import PolicyConfig
from shopformer.serve.recommender import Recommender
from shopformer.serve.serving_logs import WRITERS
from shopformer.serve.traffic_split import parse_split

USAGE_ERROR = USAGE_EXIT_CODE

SERVE_ARGS = {
    "bundle": (str, None),  # None: required
    "host": (str, "127.0.0.1"),
    "port": (int, 8000),
    "threads": (int, 1),
    "faiss_threads": (int, 1),
    "cache_dir": (str, ""),
    "log_level": (str, "info"),
    "workers": (int, 1),
    "batching": (str, "loop"),  # concurrent /recommend requests share one encoder run: loop|thread|off
    "max_batch": (int, 64),
    "max_wait_ms": (float, MAX_WAIT_MS),  # a busy service's batch waits this long for company
    "max_body_bytes": (int, MAX_BODY_BYTES),  # larger request bodies get 413 before parsing
    "policy": (str, "greedy"),  # exploration: greedy|epsilon_greedy|softmax|thompson (see serve/policies.py)
    "epsilon": (float, 0.1),
    "temperature": (float, 1.0),
    "top_n": (int, 20),  # candidates an exploring policy draws from
    "log_dir": (str, ""),  # impressions and feedback logs (off when empty; see serve/serving_logs.py)
    "log_flush_s": (float, 1.0),
    "log_writer": (str, "process"),  # the logs' files are written by a child process, or a thread
    "ab.bundle": (str, ""),  # a second bundle served beside the first as an A/B test (arm B)
    "ab.split": (str, "50/50"),  # traffic shares of arms A/B, by a stable hash of the user / session id
}
TASKS = ("recommend", "journey")
RECOMMEND_ARGS = {
    "task": (str, "recommend"),
    "bundle": (str, None),
    "input": (str, None),
    "output": (str, None),
    "k": (int, 10),
    "batch_size": (int, 256),
    "exclude_seen": (bool, True),
    "threads": (int, 1),
    "faiss_threads": (int, 1),
    "cache_dir": (str, ""),
    "filters": (str, ""),  # a JSON object of business rules, as the HTTP body's "filters"
}


class UsageError(ConfigError):
    """A command line that cannot be run."""


def parse_args(argv: Sequence[str], spec: dict[str, tuple[type, Any]], prog: str) -> dict[str, Any]:
    """``key=value`` arguments typed by ``spec`` (name -> (type, default; None = required))."""
    values: dict[str, Any] = {}
    for arg in argv:
        name, sep, raw = arg.removeprefix("--").partition("=")
        if not sep or not name:
            raise UsageError(f"argument {arg!r} is not key=value; {usage(prog, spec)}")
        if name not in spec:
            raise UsageError(f"unknown argument {name!r}; {usage(prog, spec)}")
        values[name] = _typed(name, raw, spec[name][0])
    missing = [name for name, (_, default) in spec.items() if default is None and name not in values]
    if missing:
        raise UsageError(f"missing {', '.join(f'{m}=...' for m in missing)}; {usage(prog, spec)}")
    return {name: values.get(name, default) for name, (_, default) in spec.items()}


def usage(prog: str, spec: dict[str, tuple[type, Any]]) -> str:
    parts = [
        f"{n}=..." if d is None else f"[{n}={str(d).lower() if d is True else d}]"
        for n, (_, d) in spec.items()
    ]
    return f"usage: {prog} {' '.join(parts)}"


def serve_main(argv: Sequence[str] | None = None) -> int:
    """``shopformer-serve``: load the bundle, then answer HTTP on host:port (loopback by default)."""
    return _run("shopformer-serve", SERVE_ARGS, _serve, argv)


def recommend_main(argv: Sequence[str] | None = None) -> int:
    """``shopformer-recommend``: score every session of a Parquet file into a Parquet file."""
    return _run("shopformer-recommend", RECOMMEND_ARGS, _recommend, argv)


SERVE_ENV = "SHOPFORMER_SERVE_ARGS"


def app_from_env():
    """The app of one uvicorn worker process, from the arguments shopformer-serve left in the environment."""
    # Lazy: shopformer-recommend need not import FastAPI and the app (a fifth of a second); no cycle.
    from shopformer.serve.app import create_app

    args = json.loads(os.environ[SERVE_ENV])
    app = create_app(
        args["bundle"],
        threads=args["threads"],
        faiss_threads=args["faiss_threads"],
        cache_dir=args["cache_dir"] or None,
        batching=args["batching"],
        max_batch=args["max_batch"],
        max_wait_ms=args.get("max_wait_ms", MAX_WAIT_MS),
        max_body_bytes=args.get("max_body_bytes", MAX_BODY_BYTES),
        shared_reload=args.get("reload_file"),
        policy=policy_config(args),
        log_dir=args.get("log_dir") or None,
        log_flush_interval=args.get("log_flush_s", 1.0),
        log_writer=args.get("log_writer", "process"),
        ab_bundle=args.get("ab.bundle") or None,
        ab_split=args.get("ab.split", "50/50"),
    )
    # The loaded libraries and model are hundreds of thousands of long-lived objects: left to the
    # cyclic GC, every full collection walks them all and stalls requests by tens of milliseconds.
    gc.collect()
    gc.freeze()
    return app


def policy_config(args: dict[str, Any]) -> PolicyConfig:
    """The server's exploration policy from its arguments (one line naming a bad value)."""
    fields = {"name": args.get("policy", "greedy")}
    fields |= {name: args[name] for name in ("epsilon", "temperature", "top_n") if name in args}
    try:
        return PolicyConfig(**fields)
    except RequestError as exc:
        name = exc.loc[-1] if exc.loc[-1] != "name" else "policy"
        raise UsageError(f"{name}: {exc.message}") from None


def _serve(args: dict[str, Any]) -> None:
    import uvicorn  # lazy: only shopformer-serve needs the HTTP server

    if args["workers"] < 1:
        raise UsageError(f"workers must be positive, got {args['workers']}")
    if args["workers"] > 1 and args["port"] == 0:
        raise UsageError("workers > 1 need a fixed port (port=0 would give each worker its own)")
    if args["max_batch"] < 1:
        raise UsageError(f"max_batch must be positive, got {args['max_batch']}")
    if args["max_body_bytes"] < 1:
        raise UsageError(f"max_body_bytes must be positive, got {args['max_body_bytes']}")
    if not 0 <= args["max_wait_ms"] <= 1000:
        raise UsageError(f"max_wait_ms must be between 0 and 1000, got {args['max_wait_ms']}")
    if args["batching"] not in SETTINGS:
        raise UsageError(f"batching must be one of {', '.join(SETTINGS)}, got {args['batching']!r}")
    policy_config(args)  # a bad policy setting fails here, in one line
    if args["ab.bundle"]:
        parse_split(args["ab.split"], 2)
    if args["log_flush_s"] <= 0:
        raise UsageError(f"log_flush_s must be positive, got {args['log_flush_s']}")
    if args["log_writer"] not in WRITERS:
        raise UsageError(f"log_writer must be one of {', '.join(WRITERS)}, got {args['log_writer']!r}")
    os.environ[SERVE_ENV] = json.dumps(args)
    app = app_from_env()  # loads and verifies the bundle once here, so errors surface before serving
    rec = app.state.slot.current
    print(
        f"serving {rec.name} {rec.version} ({rec.n_items - 1} items) on http://{args['host']}:{args['port']}"
        + (f" with {args['workers']} worker processes" if args["workers"] > 1 else ""),
        file=sys.stderr,
        flush=True,
    )
    common = {"host": args["host"], "port": args["port"], "log_level": args["log_level"]}
    if args["workers"] == 1:
        uvicorn.run(app, **common)
        return
    # Each worker process builds its own app (and model) from the environment, on its own socket.
    from shopformer.serve.workers import run_workers  # lazy: only workers > 1 need multiprocessing

    if app.state.slot.logs is not None:
        app.state.slot.logs.close()  # each worker opens its own (journals are locked per process)
    del app
    with tempfile.TemporaryDirectory(prefix="shopformer-serve-") as shared:
        # Workers follow each other's /admin/reload through this file (see serve/shared_reload.py).
        env = {SERVE_ENV: json.dumps({**args, "reload_file": os.path.join(shared, "bundle-source.json")})}
        code = run_workers(app_from_env, args["workers"], args["host"], args["port"], args["log_level"], env)
    if code:
        raise SystemExit(code)


def _recommend(args: dict[str, Any]) -> None:
    if args["task"] not in TASKS:
        raise UsageError(f"task={args['task']!r}: expected one of {', '.join(TASKS)}")
    if args["k"] < 1 or args["batch_size"] < 1:
        raise UsageError(
            f"k and batch_size must be positive, got k={args['k']} batch_size={args['batch_size']}"
        )
    filters = _filters(args["filters"])
    if filters and args["task"] == "journey":
        raise UsageError("filters apply to task=recommend only")
    table = read_sessions(args["input"])
    rec = Recommender.load(
        args["bundle"],
        threads=args["threads"],
        faiss_threads=args["faiss_threads"],
        cache_dir=args["cache_dir"] or None,
    )
    if args["task"] == "journey":
        _journey_scores(rec, table, args)
        return
    advance, close = progress_bar(len(table))
    try:
        frame, report = score_sessions(
            rec,
            table,
            k=args["k"],
            batch_size=args["batch_size"],
            exclude_seen=args["exclude_seen"],
            filters=filters,
            progress=advance,
        )
    except InputError as exc:
        raise InputError(f"input {args['input']}: {exc}") from None
    finally:
        close()
    write_recommendations(frame, args["output"])
    print(
        f"{report.sessions} sessions -> {report.rows} rows in {args['output']} "
        f"({report.with_unknown} with unknown items, {report.unanswered} with no known item) "
        f"in {report.seconds:.1f} s",
        file=sys.stderr,
    )
    described = {"in_stock": "in-stock share", "diversity": "category diversity", "mean_price": "mean price"}
    facts = [f"{described[name]} {value:.3f}" for name, value in report.lists.items()]
    if facts:
        print(f"recommended lists: {', '.join(facts)}", file=sys.stderr)


def _filters(raw: str) -> dict[str, Any] | None:
    """The ``filters=`` argument: a JSON object (None when not given)."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"filters={raw!r}: not JSON ({exc.msg}); e.g. filters='{{\"in_stock\": true}}'"
        ) from None
    if not isinstance(value, dict):
        raise UsageError(f"filters={raw!r}: expected a JSON object, e.g. filters='{{\"in_stock\": true}}'")
    return value


def _journey_scores(rec, table, args: dict[str, Any]) -> None:
    rec.require_journey()  # a bundle without journey.onnx: one line, before any work
    started = time.perf_counter()
    advance, close = progress_bar(len(table))
    try:
        frame = score_journey_table(rec, table, batch_size=args["batch_size"], progress=advance)
    except RequestError as exc:
        row, *field = exc.loc
        column = field[0] if field else "?"
        raise InputError(
            f"input {args['input']}: session {table.ids.iloc[row]!r}, {column}: {exc.message}"
        ) from None
    finally:
        close()
    write_recommendations(frame, args["output"])
    scored = int(frame["conversion"].notna().sum())
    print(
        f"{len(frame)} sessions -> {args['output']} ({scored} scored, "
        f"{len(frame) - scored} with no known item) in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )


def _run(prog: str, spec: dict[str, tuple[type, Any]], body: Callable[[dict[str, Any]], None], argv) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(usage(prog, spec) + "\n\n" + (__doc__ or ""))
        return 0
    try:
        body(parse_args(argv, spec, prog))
    except (UserError, OSError, pa.ArrowException) as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # anything else: still one line unless asked for the traceback
        if os.environ.get("SHOPFORMER_DEBUG"):
            traceback.print_exc()
        print(
            f"{prog}: unexpected error: {type(exc).__name__}: {one_line(exc)} "
            "(set SHOPFORMER_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1
    return 0


def _typed(name: str, raw: str, kind: type) -> Any:
    if kind is bool:
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise UsageError(f"{name}={raw!r}: expected true or false")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise UsageError(
                f"{name}={raw!r}: expected {'an integer' if kind is int else 'a number'}"
            ) from None
    return raw
