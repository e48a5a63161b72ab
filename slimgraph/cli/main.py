"""The ``slimgraph`` command: slim a model into a directory, inspect its groups, plan
and apply in two steps, compare plans, export to ONNX and benchmark.

Run ``slimgraph --help`` for the commands, ``slimgraph slim --help`` for one command.
Bad input exits with status 2 and one line on stderr that says what to fix; any other
refusal of slimgraph exits with status 1; ``--verbose`` adds the traceback.

>>> main(["slim", "--ratio", "1.5"])
2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from collections.abc import Callable

from safetensors import SafetensorError

from slimgraph.cli.parser import build_parser
from slimgraph.errors import ModelSpecError, SlimGraphError, UsageError

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit status (0 ok, 1 refused, 2 bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = "-v" in argv or "--verbose" in argv
    try:
        args = build_parser().parse_args(argv)
        verbose = args.verbose
        with warnings.catch_warnings():
            if not verbose:  # model zoos warn about their own defaults; not the user's concern
                warnings.simplefilter("ignore")
            result, printer = args.run(args)
            return _emit(args, result, printer)
    except SystemExit as done:  # --help and --version
        return done.code if isinstance(done.code, int) else EXIT_OK
    except BrokenPipeError:  # `slimgraph ... | head`: stop quietly, as SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (UsageError, ModelSpecError) as err:
        return _fail(str(err), EXIT_USAGE, verbose)
    except SlimGraphError as err:
        return _fail(str(err), EXIT_FAILED, verbose)
    except SafetensorError as err:  # a weights file read by a model zoo's own loader
        first = (str(err).splitlines() or [""])[0]
        return _fail(
            f"a safetensors file is corrupt or truncated ({first}); write it again",
            EXIT_USAGE,
            verbose,
        )
    except KeyboardInterrupt:
        return _fail("interrupted", 130, verbose=False)
    except Exception as err:
        hint = "" if verbose else " (rerun with --verbose for the traceback)"
        return _fail(f"unexpected {type(err).__name__}: {err}{hint}", EXIT_FAILED, verbose)


def _emit(args: argparse.Namespace, result: dict, printer: Callable[[dict], None]) -> int:
    """A command's ending: its result as JSON (``--json``) or as ``printer`` renders it."""
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        printer(result)
    return EXIT_OK


def _fail(message: str, code: int, verbose: bool) -> int:
    if verbose:
        traceback.print_exc()
    print(f"slimgraph: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
