"""The `mncompile` command. Thin: parse arguments, call the library, print.

`mncompile SPEC` compiles; `mncompile SUBCOMMAND ...` runs a subcommand. Every user
error prints one positioned message and exits with status 2; `--debug` shows tracebacks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from mncompile import __version__
from mncompile.commands import bench, check, compile, export, fmt, import_, plan, run
from mncompile.diagnostics import MNError

#: every subcommand, in the order `--help` lists them
COMMANDS: tuple[ModuleType, ...] = (compile, check, fmt, plan, import_, run, bench, export)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mncompile",
        description="Compile a .mnet ensemble spec into MotherNets training code.",
        epilog="'mncompile SPEC' compiles the spec (see 'mncompile compile --help').",
    )
    p.add_argument("--version", action="version", version=f"mncompile {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMANDS:
        sp = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(sp)
        sp.set_defaults(handler=mod.run)
    return p


def _route(argv: list[str]) -> list[str]:
    """`mncompile [--debug] SPEC ...` means `mncompile [--debug] compile SPEC ...`."""
    names = {m.NAME for m in COMMANDS}
    for i, a in enumerate(argv):
        if a.startswith("-"):
            continue
        if a not in names and "compile" in names:
            return argv[:i] + ["compile"] + argv[i:]
        break
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(_route(args_list))
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except MNError as err:
        if args.debug:
            if err.detail is not None:  # the user code's own traceback first
                import traceback

                traceback.print_exception(err.detail)
            raise
        print(str(err), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
