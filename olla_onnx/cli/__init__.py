"""Entry point of the ``olla-onnx`` command: a thin typer layer over the library.

Library errors (:class:`olla_onnx.errors.OllaInputError`) become one-line
messages with exit code 2; nothing the user types produces a traceback. A bug
(any other exception) is reported in one line with exit code 1; set
``OLLA_DEBUG=1`` to see its traceback.
"""

from __future__ import annotations

import os
import sys

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError

from olla_onnx.cli.common import app as _app
from olla_onnx.cli.common import err_console
from olla_onnx.errors import OllaInputError

# Importing a command module registers its command on the shared app.
from olla_onnx.cli import inspect as _inspect  # noqa: F401,E402
from olla_onnx.cli import optimize as _optimize  # noqa: F401,E402
from olla_onnx.cli import plot as _plot  # noqa: F401,E402
from olla_onnx.cli import bench as _bench  # noqa: F401,E402
from olla_onnx.cli import place as _place  # noqa: F401,E402
from olla_onnx.cli import run as _run  # noqa: F401,E402


def app() -> None:
    """Run the CLI; user errors exit 2 with one line on stderr."""
    try:
        rv = _app(standalone_mode=False)
    except OllaInputError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(0)
    except ClickException as exc:  # usage errors: bad option, missing argument
        exc.show()
        sys.exit(2)
    except Exception as exc:  # a bug, not bad input
        if os.environ.get("OLLA_DEBUG"):
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (set OLLA_DEBUG=1 for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    if isinstance(rv, int) and rv:
        sys.exit(rv)
