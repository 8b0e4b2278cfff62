"""MkDocs hook: the command-line reference, written from the argparse parsers at build time.

A page holds one marker line per command::

    <!-- cli-reference: automtl -->            the list of commands
    <!-- cli-reference: automtl search -->     usage, description, every argument of `automtl search`

and the build replaces each with what :func:`automtl.cli.build_parser` says now, so a renamed
flag, a new default or a new help text changes the page without anyone editing it. The build
fails (a ``PluginError``) on a marker naming no command, and on a command of the parser that a
page with markers leaves out: a new sub-command has to be placed on the page.
"""

from __future__ import annotations

import argparse
import html
import re
from typing import Dict, List, Optional

MARKER = re.compile(r"^<!-- cli-reference: automtl(?: (?P<command>[a-z][a-z0-9_-]*))? -->[ \t]*$", re.MULTILINE)
_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def subcommands(parser: argparse.ArgumentParser) -> Dict[str, argparse.ArgumentParser]:
    """``automtl``'s sub-command parsers by name, in the order ``automtl --help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def summaries(parser: argparse.ArgumentParser) -> Dict[str, str]:
    """The one-line help of each sub-command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


def escape(text: str) -> str:
    """Plain text as Markdown that renders it unchanged (in a paragraph or a table cell)."""
    return _SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def _blocks(text: Optional[str]) -> List[str]:
    """A description or epilog as Markdown: paragraphs reflowed, indented parts kept as text."""
    out = []
    for paragraph in re.split(r"\n\s*\n", (text or "").strip("\n")):
        lines = paragraph.rstrip().split("\n")
        if not paragraph.strip():
            continue
        if any(line.startswith(" ") for line in lines) or lines[0].rstrip().endswith(":") and len(lines) > 1:
            out.append("```text\n" + paragraph.rstrip() + "\n```")
        else:
            out.append(escape(" ".join(line.strip() for line in lines)))
    return out


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest.upper()}`"
    metavar = ""
    if action.nargs != 0:
        if action.metavar is not None:
            metavar = action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar)
        elif action.choices is not None:
            metavar = "{" + ",".join(map(str, action.choices)) + "}"
        else:
            metavar = action.dest.upper()
    return ", ".join(f"`{flag}{' ' + metavar if metavar else ''}`" for flag in action.option_strings)


def _default(action: argparse.Action) -> str:
    if not action.option_strings or action.default in (None, argparse.SUPPRESS, False, []) or action.nargs == 0:
        return ""
    return f"`{action.default}`"


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help:
        return ""
    formatter = argparse.HelpFormatter(parser.prog)
    text = formatter._expand_help(action)  # %(default)s and the like, as --help prints them
    if action.nargs == argparse.ZERO_OR_MORE or isinstance(action, argparse._AppendAction):
        text += " (repeatable)" if "repeat" not in text else ""
    return escape(" ".join(text.split()))


def render_command(parser: argparse.ArgumentParser, name: str) -> str:
    """Usage, description, arguments (one table per argument group) and epilog of one command."""
    command = subcommands(parser)[name]
    parts = ["```text\n" + command.format_usage().strip() + "\n```"]
    parts += _blocks(command.description)
    for group in command._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction) and a.help != argparse.SUPPRESS]
        if not actions:
            continue
        title = "arguments" if group.title == "positional arguments" else group.title
        rows = ["| argument | default | meaning |", "| --- | --- | --- |"]
        rows += [f"| {_invocation(a)} | {_default(a)} | {_help(command, a)} |" for a in actions]
        parts.append(f"**{escape(title)}**\n\n" + "\n".join(rows))
    parts += _blocks(command.epilog)
    return "\n\n".join(parts)


def render_overview(parser: argparse.ArgumentParser) -> str:
    """The list of commands, each linked to its section (headings `## automtl NAME`)."""
    rows = ["| command | what it does |", "| --- | --- |"]
    rows += [f"| [`automtl {name}`](#automtl-{name}) | {escape(text)} |" for name, text in summaries(parser).items()]
    return "```text\n" + parser.format_usage().strip() + "\n```\n\n" + "\n".join(rows)


def expand(markdown: str, parser: argparse.ArgumentParser, where: str = "the page") -> str:
    """``markdown`` with every marker replaced; an unknown or a missing command is an error."""
    commands = subcommands(parser)
    seen: List[str] = []

    def replace(match: "re.Match[str]") -> str:
        name = match["command"]
        if name is None:
            return render_overview(parser)
        if name not in commands:
            raise ValueError(f"{where}: '{match.group(0).strip()}' names no command; "
                             f"automtl has {', '.join(commands)}")
        seen.append(name)
        return render_command(parser, name)

    expanded = MARKER.sub(replace, markdown)
    missing = [name for name in commands if name not in seen]
    if seen and missing:
        raise ValueError(f"{where}: no '<!-- cli-reference: automtl NAME -->' for {', '.join(missing)}; "
                         "add a section for each new command")
    return expanded


def on_page_markdown(markdown, page, config, files):
    if not MARKER.search(markdown):
        return markdown
    from mkdocs.exceptions import PluginError

    from automtl.cli import build_parser

    try:
        return expand(markdown, build_parser(), page.file.src_uri)
    except ValueError as exc:
        raise PluginError(str(exc)) from exc
