"""``faasd new NAME --lang LANG``: scaffold a function directory and its stack.yml entry."""

from __future__ import annotations

import os

import click

from faasd.cli.common import fail
from faasd.errors import InvalidRequest
from faasd.providers.types import validate_function_name
from faasd.stack import LANGUAGE_ALIASES
from faasd.templates import TEMPLATES, scaffold, stack_entry

__all__ = ["new"]


@click.command()
@click.argument("name")
@click.option(
    "--lang",
    "language",
    type=click.Choice(sorted({*TEMPLATES, *LANGUAGE_ALIASES})),
    required=True,
    help="Template (python3 and python3-http are OpenFaaS's names for python and python-http).",
)
@click.option("--prefix", default=".", show_default=True, help="Directory to create the function in.")
@click.option("-f", "--yaml", "stack_file", default="stack.yml", show_default=True, help="Stack file to add it to.")
def new(name: str, language: str, prefix: str, stack_file: str) -> None:
    """Create NAME/ from a template (python, python-http, bash) and add it to the stack file.

    Deploy it with 'faasd deploy -f stack.yml NAME' (or 'faasd up -f stack.yml').
    """
    try:
        validate_function_name(name, "function name")
    except InvalidRequest as exc:
        raise fail(exc.message) from None
    language = LANGUAGE_ALIASES.get(language, language)
    try:
        written = scaffold(name, language, prefix)
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    stack_path = stack_file if os.path.isabs(stack_file) else os.path.join(prefix, stack_file)
    handler_dir = os.path.relpath(os.path.join(prefix, name), os.path.dirname(os.path.abspath(stack_path)))
    entry = stack_entry(name, TEMPLATES[language], handler_dir)
    if os.path.exists(stack_path):
        with open(stack_path, encoding="utf-8") as file:
            text = file.read()
        if "functions:" not in text:
            raise fail(f"{stack_path} has no 'functions:' section; add this yourself:\n{entry}")
        with open(stack_path, "a", encoding="utf-8") as file:
            file.write(("" if text.endswith("\n") else "\n") + entry)
    else:
        with open(stack_path, "w", encoding="utf-8") as file:
            file.write(
                "version: 1.0\nprovider:\n  name: openfaas\n  gateway: ${FAASD_URL:-http://127.0.0.1:8080}\n"
                "functions:\n" + entry
            )
    for path in written:
        click.echo(f"created {path}")
    click.echo(f"added {name} to {stack_path}")
    click.echo(f"next: faasd deploy -f {stack_path} {name}")
