"""The ``txm-streamer`` command: one entry point, one subcommand per job.

The argument definitions live here, so ``txm-streamer --help`` stays fast and documents the whole
contract in one place; each subcommand's work is imported only when it runs: ``demo`` from
:mod:`sim.demo`, ``alerts`` from :mod:`streamer.alerts.console`, ``serve`` and ``replay`` from
:mod:`callbacks` (they need bluesky, which the engine in :mod:`streamer` never imports).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

DEFAULT_ALERT_ENDPOINT = "tcp://127.0.0.1:5577"
"""Where alerts are published unless the user names another address (loopback only)."""

SEVERITIES = ("debug", "info", "warning", "critical")
ALERT_KINDS = ("anomalous_particle", "new_cluster", "data_quality", "scan_summary")

log = logging.getLogger("streamer.cli")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run a simulated TXM-XANES survey through a real RunEngine, analysed live",
        description=(
            "Simulate a survey of many fields of view (each one FXI-style XANES run), analyse it "
            "live "
            "with the XanesAnalyzer subscribed to a real bluesky RunEngine, publish alerts over "
            "ZeroMQ, and write DIR/alerts.jsonl, DIR/truth.json and DIR/report/. Ends with a "
            "table of "
            "planted versus found anomalies."
        ),
    )
    p.add_argument("--fovs", type=int, default=8, help="number of fields of view (default: 8)")
    p.add_argument(
        "--size", type=int, default=256, help="frame size in pixels, square (default: 256)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed of the simulated sample (default: 0)"
    )
    p.add_argument("--out", default="demo-output", help="output directory (default: demo-output)")
    p.add_argument(
        "--endpoint",
        default=DEFAULT_ALERT_ENDPOINT,
        help=f"ZeroMQ endpoint the alerts are published on (default: {DEFAULT_ALERT_ENDPOINT})",
    )
    p.add_argument(
        "--subtle", action="store_true", help="plant subtle anomalies near the noise floor"
    )
    p.add_argument(
        "--dialect",
        choices=("xanes_scan2", "xanes_scan"),
        default="xanes_scan2",
        help="FXI plan to simulate: flats per energy (xanes_scan2) or after the last energy",
    )
    p.add_argument(
        "--no-subscriber", action="store_true", help="do not start the subscriber process"
    )
    p.add_argument(
        "--no-archive", action="store_true", help="do not archive the runs into DIR/catalog"
    )
    p.set_defaults(_run="sim.demo:run")


def _add_alerts(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "alerts",
        help="subscribe to alerts and print them as they come",
        description=(
            "Subscribe to a txm-streamer alert publisher and print one line per alert, coloured by "
            "severity when the terminal allows. Late subscribers first receive the alerts that are "
            "currently firing. Warns when heartbeats stop or a sequence gap or publisher restart "
            "is seen."
        ),
        epilog=(
            "Exit status: 0; 1 if --timeout expires before --count alerts arrived; 2 for bad "
            "options; 130 after Ctrl-C. Colours follow the terminal and NO_COLOR."
        ),
    )
    p.add_argument(
        "--connect",
        default=DEFAULT_ALERT_ENDPOINT,
        metavar="ENDPOINT",
        help=f"publisher endpoint (default: {DEFAULT_ALERT_ENDPOINT})",
    )
    p.add_argument(
        "--min-severity",
        choices=SEVERITIES,
        default="info",
        metavar="LEVEL",
        help=f"lowest severity to show, one of {', '.join(SEVERITIES)} (default: info)",
    )
    p.add_argument(
        "--kind",
        action="append",
        choices=ALERT_KINDS,
        metavar="KIND",
        help=f"only these kinds (repeatable), of {', '.join(ALERT_KINDS)}",
    )
    p.add_argument("--json", action="store_true", help="print each alert as one JSON line")
    p.add_argument(
        "--mode",
        choices=("live", "replay", "all"),
        default="all",
        help="only live or only replayed alerts (default: all)",
    )
    p.add_argument(
        "--count", type=int, default=None, help="exit after this many alerts (default: run forever)"
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="exit after this many seconds (default: never)"
    )
    p.set_defaults(_run="streamer.alerts.console:run")


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="analyse live documents from another process (bluesky 0MQ proxy)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run the analyzer as its own service, fed by the RunEngine's documents through\n"
            "bluesky's 0MQ proxy (bluesky-0MQ-proxy --in-address 127.0.0.1:5567\n"
            "--out-address 127.0.0.1:5568).\n"
            "The service never unpickles: on the RunEngine side publish with txm-streamer's\n"
            "serializer, and archive the runs if you want catch-up after a restart:\n\n"
            "    from bluesky.callbacks.zmq import Publisher\n"
            "    from streamer.wire import dumps\n"
            '    RE.subscribe(Publisher("127.0.0.1:5567", serializer=dumps))\n'
            "    from callbacks.handlers import HANDLER_REGISTRY\n"
            "    from streamer.archive import Archiver\n"
            '    RE.subscribe(Archiver("/data/txm-catalog", handler_registry=HANDLER_REGISTRY))\n'
        ),
        epilog=(
            "Restart with the same --out (and --checkpoint, --catalog): the campaign model\n"
            "resumes, runs missed while the service was down are analysed from --catalog first,\n"
            "and no alert state is published twice (OUT/journal/). Lag and counters:\n"
            "OUT/serve-status.json. SIGINT/SIGTERM: analyse what was received, save the\n"
            "checkpoint, exit 0. See docs/serve.md."
        ),
    )
    p.add_argument(
        "--source",
        required=True,
        help="document source, zmq://HOST:PORT (the proxy's outbound port), e.g. zmq://127.0.0.1:5568",
    )
    p.add_argument("--out", default="txm-streamer-output", help="output directory")
    p.add_argument("--endpoint", default=DEFAULT_ALERT_ENDPOINT, help="alert endpoint")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="campaign checkpoint file, resumed if present (default: OUT/campaign-checkpoint.npz)",
    )
    p.add_argument(
        "--catalog",
        default=None,
        metavar="DIR",
        help="catalog the RunEngine side archives into: runs missed while down are analysed first",
    )
    p.add_argument(
        "--lag-warning",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="warn (and fire a data_quality alert) when documents arrive this late (default: 30)",
    )
    p.add_argument(
        "--status-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how often lag and counters are logged and written to OUT/serve-status.json",
    )
    p.add_argument(
        "--wait-for-subscribers",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for a first alert subscriber before analysing (default: 0)",
    )
    p.add_argument(
        "--journal-fsync",
        choices=("line", "batch", "never"),
        default="line",
        help="force each journal record to disk (line), about once a second (batch), or never",
    )
    p.set_defaults(_run="callbacks.serve:run")


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="replay archived runs from a catalog through the same analyzer",
        description=(
            "Replay archived runs from a tiled/databroker catalog (a directory holding the "
            "embedded "
            "SQLite catalog, or a tiled server URL) through the same callbacks as live. Alerts "
            "carry "
            "mode 'replay'."
        ),
    )
    p.add_argument("catalog", help="catalog directory or tiled URL")
    p.add_argument("--uid", action="append", default=None, help="run uid to replay (repeatable)")
    p.add_argument("--out", default="txm-streamer-replay", help="output directory")
    p.add_argument("--endpoint", default=DEFAULT_ALERT_ENDPOINT, help="alert endpoint")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--workers", type=int, default=None, help="run on a local dask cluster")
    group.add_argument(
        "--scheduler", default=None, metavar="ADDRESS", help="dask scheduler address"
    )
    p.add_argument(
        "--documents",
        action="store_true",
        help="read through JSON documents() instead of the fast array path (slow; for checking)",
    )
    p.add_argument(
        "--final-only",
        action="store_true",
        help="mine the campaign: evaluate each run once, on its complete spectra (no provisional "
        "alerts, as a live scan would give; much faster)",
    )
    p.set_defaults(_run="callbacks.replay:run")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``txm-streamer`` command."""
    parser = argparse.ArgumentParser(
        prog="txm-streamer",
        description=(
            "Streaming, real-time analysis of TXM-XANES imaging: per-pixel spectra from bluesky "
            "documents, online clustering and anomaly scoring, alerts over ZeroMQ."
        ),
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_demo, _add_alerts, _add_serve, _add_replay):
        add(sub)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    # tiled's HTTP client logs every in-process request at INFO: keep that for -vv
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbosity > 1 else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``txm-streamer`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    module_name, func_name = args._run.split(":")
    run = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        log.warning("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
