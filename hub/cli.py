"""The `hub` command.

Extra sub-commands (``hub sandbox``) come from the ``hub.commands`` entry-point group:
each entry point is a function that receives the sub-parsers object and adds itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

from hub.collector import tune_collector
from hub.logs import configure as configure_logging

__all__ = ["load_config", "main", "run_loop", "serve"]

T = TypeVar("T")

DEFAULT_CONFIG = "hub.yaml"


def config_file(path: str | None) -> Path | None:
    """The hub.yaml to read: ``path``, $HUB_CONFIG or ./hub.yaml; None if none exists."""
    chosen = path or os.environ.get("HUB_CONFIG")
    if chosen is None:
        return Path(DEFAULT_CONFIG).resolve() if Path(DEFAULT_CONFIG).exists() else None
    return Path(chosen).resolve()


def load_config(path: str | None) -> Any:
    """The plan from :func:`config_file`; the built-in defaults if there is none."""
    from hub.config.plan import ConfigError, load_plan, plan_from_mapping

    chosen = config_file(path)
    try:
        if chosen is None:
            return plan_from_mapping({}, source="(built-in defaults)")
        return load_plan(chosen)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None


def serve(
    plan: Any,
    *,
    host: str | None = None,
    port: int | None = None,
    worker: bool = True,
    config_file: Path | None = None,
) -> None:
    """Run the API (and workers) until SIGINT/SIGTERM; drains before exiting.

    Workers run in ``worker.processes`` child processes on the hub.yaml at
    ``config_file``, or in this process when that is 0. The children read their plan
    from that file, so it must be the one ``plan`` came from (None: ``plan`` is the
    built-in defaults).
    """
    import uvicorn

    from hub.api.app import create_app
    from hub.runtime import HubRuntime

    runtime = HubRuntime(
        plan,
        with_worker=worker,
        worker_processes=plan.spec.worker.process_count(),
        config=config_file,
    )
    app = create_app(runtime)
    tune_collector()
    config = uvicorn.Config(
        app,
        host=host or plan.spec.api.host,
        port=plan.spec.api.port if port is None else port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    uvicorn.Server(config).run()


def _cmd_run(args: argparse.Namespace) -> int:
    plan = load_config(args.config)
    path = config_file(args.config)
    serve(plan, host=args.host, port=args.port, worker=not args.no_worker, config_file=path)
    return 0


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop where it is installed, as ``hub run`` does through uvicorn.

    A worker spends a quarter of its time in the event loop's own machinery.
    """
    try:
        import uvloop
    except ImportError:  # e.g. on Windows
        return asyncio.run(main)
    return uvloop.run(main)


def _cmd_worker(args: argparse.Namespace) -> int:
    from hub.engine.processes import ChildLink
    from hub.engine.worker import Worker
    from hub.store.store import Store

    plan = load_config(args.config)
    # The worker runs its store calls on its own loop: on PostgreSQL a statement the
    # server holds fails within half a lease, to be logged and retried, rather than
    # stall the process until its claims expire.
    store = Store.open(
        plan.database_url,
        migrate=plan.database_url.startswith("sqlite"),
        sync=plan.spec.database_sync,
        statement_timeout=plan.spec.worker.lease_seconds / 2,
    )

    link = ChildLink(args.link_fd) if args.link_fd is not None else None
    tune_collector()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # Alone in its process, a worker calls the store on its own loop (see Worker).
        worker = Worker(store, plan, name=args.name, metrics=link, inline_db=True)
        if link is not None:
            link.listen(worker.wake, stop)
        await worker.run(stop, ready=link.ready if link is not None else None)

    try:
        run_loop(run())
    finally:
        store.close()
        if link is not None:
            link.close()
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    plan = load_config(args.config)
    routes, dests = len(plan.routes), len(plan.destinations)
    print(f"{plan.source}: valid ({dests} destinations, {routes} routes)")
    if not plan.spec.clients:
        print("warning: no clients configured: the API accepts unauthenticated calls")
    return 0


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from hub.store.database import make_engine, upgrade

    plan = load_config(args.config)
    engine = make_engine(plan.database_url, sync=plan.spec.database_sync)
    upgrade(engine, args.revision)
    engine.dispose()
    print(f"database at revision {args.revision}")
    return 0


def _cmd_schema(_args: argparse.Namespace) -> int:
    from hub.model.events import event_json_schema

    print(json.dumps(event_json_schema(), indent=2, ensure_ascii=False))
    return 0


def _cmd_docs(args: argparse.Namespace) -> int:
    from hub.docs import configuration_reference

    text = configuration_reference()
    if args.output == "-":
        print(text, end="")
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


def _store(args: argparse.Namespace) -> Any:
    from hub.store.store import Store

    plan = load_config(args.config)
    return Store.open(
        plan.database_url,
        migrate=plan.database_url.startswith("sqlite"),
        sync=plan.spec.database_sync,
    )


def _when(value: float | None) -> str:
    return "-" if value is None else datetime.fromtimestamp(value, UTC).isoformat()


def _cmd_messages_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        page = store.list_messages(
            incident_id=args.incident, status=args.status, limit=args.limit, cursor=args.cursor
        )
    except ValueError:
        store.close()
        print(
            f"invalid cursor {args.cursor!r}: use the one `hub messages list` printed",
            file=sys.stderr,
        )
        return 2
    for m in page.items:
        print(
            f"{m['id']}  {_when(m['received_at'])}  {m['status']:<8} {m['channel']:<5} "
            f"incident={m['incident_id'] or '-'} events={m['event_count']}"
        )
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}")
    store.close()
    return 0


def _cmd_messages_show(args: argparse.Namespace) -> int:
    store = _store(args)
    message = store.get_message(args.id, actor=f"cli:{os.environ.get('USER', 'unknown')}")
    store.close()
    if message is None:
        print(f"no message {args.id}", file=sys.stderr)
        return 1
    raw = message.pop("raw")
    message["raw_text"] = raw.decode("utf-8", "replace")
    for d in message["deliveries"]:
        payload = d.pop("payload")
        d["payload_text"] = None if payload is None else payload.decode("utf-8", "replace")
    print(json.dumps(message, indent=2, ensure_ascii=False, default=str))
    return 0


def _cmd_resend(args: argparse.Namespace) -> int:
    from hub.store.store import ResendError

    store = _store(args)
    actor = f"cli:{os.environ.get('USER', 'unknown')}"
    status = 0
    for delivery_id in args.ids:
        try:
            store.resend(delivery_id, actor=actor, remap=args.remap)
            print(f"delivery {delivery_id}: queued again")
        except ResendError as exc:
            print(f"delivery {delivery_id}: {exc}", file=sys.stderr)
            status = 1
    store.close()
    return status


def _cmd_validate(args: argparse.Namespace) -> int:
    from hub.validate import validate_file

    status = 0
    for name in args.files:
        try:
            kind, problems = validate_file(name)
        except OSError as exc:
            print(f"{name}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            status = 1
            continue
        for problem in problems:
            print(f"{name}: {problem}")
        if problems:
            status = 1
        else:
            print(f"{name}: valid ({kind})")
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description="Prehospital interoperability hub")
    parser.add_argument("-c", "--config", help="hub.yaml (default: $HUB_CONFIG or ./hub.yaml)")
    parser.add_argument("--log-level", default=os.environ.get("HUB_LOG_LEVEL", "info"))
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="API, listeners and workers (worker.processes)")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--no-worker", action="store_true", help="API only (scale-out)")
    run.set_defaults(func=_cmd_run)

    worker = sub.add_parser("worker", help="delivery workers only (scale-out)")
    worker.add_argument("--name", help="worker id in claims and attempts")
    worker.add_argument("--link-fd", type=int, help=argparse.SUPPRESS)  # set by `hub run`
    worker.set_defaults(func=_cmd_worker)

    sub.add_parser("check", help="validate hub.yaml, report every problem").set_defaults(
        func=_cmd_check
    )

    validate = sub.add_parser(
        "validate", help="check FHIR JSON / HL7 v2 ER7 files against the models and profiles"
    )
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(func=_cmd_validate)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    up = db.add_parser("upgrade", help="apply migrations")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=_cmd_db_upgrade)

    sub.add_parser("schema", help="JSON Schema of the event envelope").set_defaults(
        func=_cmd_schema
    )

    docs = sub.add_parser("docs", help="write the generated hub.yaml reference")
    docs.add_argument("--output", default="docs/configuration.md", help="file, or - for stdout")
    docs.set_defaults(func=_cmd_docs)

    messages = sub.add_parser("messages", help="browse messages").add_subparsers(
        dest="messages", required=True
    )
    ls = messages.add_parser("list")
    ls.add_argument("--incident")
    ls.add_argument("--status", choices=["accepted", "rejected"])
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--cursor")
    ls.set_defaults(func=_cmd_messages_list)
    show = messages.add_parser("show")
    show.add_argument("id")
    show.set_defaults(func=_cmd_messages_show)

    resend = sub.add_parser("resend", help="queue dead or delivered deliveries again")
    resend.add_argument("ids", nargs="+", type=int, metavar="DELIVERY_ID")
    resend.add_argument("--remap", action="store_true", help="map the event again")
    resend.set_defaults(func=_cmd_resend)

    for ep in entry_points(group="hub.commands"):
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        return int(args.func(args))
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
