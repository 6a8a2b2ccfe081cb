"""Compact `--help` for commands with many options: one panel per `rich_help_panel`, one row per
option (`--flag METAVAR` | help [default]), choices spelled out.

Readable at 80 columns (nothing cut: long cells wrap) and the same under every typer version
the project supports, since it reads only click's parameter fields.
"""

from __future__ import annotations

import io
import shutil
import sys
import textwrap
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

TYPE_NAMES = {"integer": "INT", "float": "FLOAT", "text": "TEXT", "path": "PATH"}
MAX_WIDTH = 100
# Panels in this order (others before "Output"); "Options" holds the options of no panel.
ORDER = (
    "Run",
    "Sweep",
    "Data",
    "Pruning",
    "Protocol",
    "Privacy",
    "Federation",
    "Output",
    "Options",
)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _flags(param: Any) -> str:
    """The option's names: `--x`, or `--x / --no-x` for an on/off pair."""
    return " / ".join([*param.opts, *param.secondary_opts])


def _annotation_metavar(annotation: Any) -> str:
    """The metavar of a Python annotation (typer >= 0.21 keeps the annotation, not a click type)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is not None and len(args) == 1:
        return _annotation_metavar(args[0])  # X | None, list[X]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "|".join(str(member.value) for member in annotation)
    names = {int: "INT", float: "FLOAT", str: "TEXT", Path: "PATH"}
    return names.get(annotation, "VALUE")


def _metavar(param: Any) -> str:
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    if param.metavar:
        return str(param.metavar)
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        return _annotation_metavar(descriptor.annotation)
    choices = getattr(param.type, "choices", None)  # click's parameter types (typer < 0.21)
    if choices:
        return "|".join(str(_plain(c)) for c in choices)
    return TYPE_NAMES.get(param.type.name, param.type.name.upper())


def _default(param: Any) -> str:
    default = param.default
    if getattr(param, "is_flag", False):
        return ("on" if default else "off") if param.secondary_opts else ""
    if default is None or param.show_default is False or default == [] or default == ():
        return ""
    if isinstance(default, (list, tuple)):
        return ",".join(str(_plain(d)) for d in default)
    return str(_plain(default))


def _row(param: Any, help_width: int) -> tuple[Text, Text]:
    """The option's two cells; its default goes on a line of its own rather than be split."""
    left = Text(_flags(param), style="bold cyan")
    metavar = _metavar(param)
    if metavar:
        left.append(" " + metavar, style="yellow")
    text = (param.help or "") + (" (required)" if param.required else "")
    right = Text(text)
    default = _default(param)
    if default:
        label = f"[default: {default}]"
        lines = textwrap.wrap(text, help_width) or [""]
        fits = len(lines[-1]) + 1 + len(label) <= help_width
        right.append((" " if fits and text else "\n" if text else "") + label, style="dim")
    return left, right


def _left_width(param: Any, most: int) -> int:
    """Columns the option's names need: all on one line, else one name per line."""
    cell = " ".join(filter(None, (_flags(param), _metavar(param))))
    if len(cell) <= most:
        return len(cell)
    return max(len(part) + 2 for part in cell.split(" / "))


def _rank(panel: str) -> int:
    return ORDER.index(panel) if panel in ORDER else ORDER.index("Output") - 1


def render_help(command: Any, ctx: Any, width: int) -> str:
    """The help text of `command` (a click command) at `width` columns."""
    color = sys.stdout.isatty()
    console = Console(file=io.StringIO(), width=width, force_terminal=color, highlight=False)
    pieces = " ".join(command.collect_usage_pieces(ctx))
    console.print(Text(f"Usage: {ctx.command_path} {pieces}", style="bold"))
    if command.help:
        console.print()
        console.print(Text(command.help.strip()))
    console.print()
    panels: dict[str, list[Any]] = {}
    for param in command.get_params(ctx):
        if not getattr(param, "hidden", False):
            panels.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(
                param
            )
    for name, params in sorted(panels.items(), key=lambda item: _rank(item[0])):
        left_width = max(_left_width(p, width // 2 - 8) for p in params)
        table = Table.grid(padding=(0, 2), expand=True)
        table.add_column(width=left_width)
        table.add_column(ratio=1)
        for param in params:
            table.add_row(*_row(param, width - 4 - 2 - left_width))
        console.print(Panel(table, title=name, title_align="left", border_style="dim"))
    if hasattr(command, "list_commands"):
        _commands_panel(console, command, ctx)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def _commands_panel(console: Console, group: Any, ctx: Any) -> None:
    table = Table.grid(padding=(0, 2), expand=True)
    table.add_column(no_wrap=True, style="bold cyan")
    table.add_column(ratio=1)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None and not getattr(command, "hidden", False):
            table.add_row(name, Text(command.get_short_help_str(limit=200)))
    console.print(Panel(table, title="Commands", title_align="left", border_style="dim"))


class PanelGroup(TyperGroup):
    """A typer group whose `--help` is `render_help`'s (options, then its commands)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        width = min(shutil.get_terminal_size((80, 24)).columns, MAX_WIDTH)
        formatter.write(render_help(self, ctx, width))


class PanelCommand(TyperCommand):
    """A typer command whose `--help` is `render_help`'s."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        width = min(shutil.get_terminal_size((80, 24)).columns, MAX_WIDTH)
        formatter.write(render_help(self, ctx, width))
