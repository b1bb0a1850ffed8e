"""``viewfinder prompts``: the prompt files the language-model stages use."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .common import ViewfinderTyper, console, fail, user_errors

prompts_app = ViewfinderTyper(help="Prompts as data: list them, show one.", no_args_is_help=True)


@prompts_app.command("list")
def list_cmd() -> None:
    """The packaged prompts: name, version, the variables they fill, what they are for."""
    from ..agent.prompts import load_prompt, packaged_prompts

    table = Table()
    for column in ("name", "version", "fills", "description"):
        table.add_column(column)
    for name in packaged_prompts():
        p = load_prompt(name)
        table.add_row(p.name, str(p.version), ", ".join(p.input_variables), escape(p.description))
    console.print(table)


@prompts_app.command("show")
def show_cmd(name: Annotated[str, typer.Argument(help="A packaged prompt's name, or a prompt file.")]) -> None:
    """A prompt's messages, as the model will see them (variables in braces)."""
    from ..agent.prompts import load_prompt

    try:
        prompt = load_prompt(name)
    except user_errors() as exc:
        fail(str(exc))
        return
    console.print(f"[bold]{escape(prompt.name)}[/] v{prompt.version} ({escape(prompt.source)})", soft_wrap=True)
    for role, text in prompt.messages:
        console.print(f"[dim]--- {role}[/]")
        console.print(escape(text), soft_wrap=True)
