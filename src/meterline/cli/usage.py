"""Running the command tree: plain help, and every failure as one coded line.

Typer draws usage errors in boxes and shows option types as `<str>`/`<bool>`;
scripts and people reading a log need neither. The tree is run in click's
non-standalone mode so that usage errors, aborts and unexpected exceptions all
end as `meterline: CODE: message` on stderr with the exit status of DESIGN §12.
"""

from __future__ import annotations

import sys

import typer
from typer._click.core import Command, Context
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperArgument, TyperGroup, TyperOption

from meterline.cli.context import EXIT_BAD_INPUT, error_line

EXIT_INTERNAL = 70


def _plain(command: Command) -> None:
    """Plain help for `command` and its subcommands: metavars instead of types."""
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None
    for param in command.params:
        if isinstance(param, TyperOption):
            if param.is_flag or param.count or param.metavar is not None:
                continue
            longest = max(param.opts, key=len).lstrip("-")
            param.metavar = longest.upper().replace("-", "_")
        elif isinstance(param, TyperArgument) and param.metavar is None:
            param.metavar = (param.name or "arg").upper().removesuffix("_")
            # The name says it all; no "<str>" or "<list[int]>" after it.
            setattr(param, "display_type_rich", lambda ctx: None)  # noqa: B010
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            _plain(sub)


def _command_path(ctx: Context | None) -> str:
    return ctx.command_path if ctx is not None else "meterline"


def run(app: typer.Typer, args: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (never raises, never a traceback)."""
    command = typer.main.get_command(app)
    _plain(command)
    try:
        rv = command.main(args=args, prog_name="meterline", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        # `meterline invoice` with nothing after it: the help, as asked for.
        if exc.ctx is not None:
            sys.stdout.write(exc.ctx.get_help() + "\n")
        return 0
    except UsageError as exc:
        message = " ".join(exc.format_message().split())
        error_line(f"INVALID_ARGUMENT: {message} (see `{_command_path(exc.ctx)} -h`)")
        return EXIT_BAD_INPUT
    except ClickException as exc:
        error_line(f"INVALID_ARGUMENT: {exc.format_message()}")
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        error_line("INTERRUPTED: aborted")
        return 130
    except KeyboardInterrupt:
        error_line("INTERRUPTED: interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # the last line of defence: never a traceback
        error_line(f"INTERNAL_ERROR: {type(exc).__name__}: {exc} (please report this)")
        return EXIT_INTERNAL
    return rv if isinstance(rv, int) else 0
