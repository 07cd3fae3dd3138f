"""Label selectors of ``GET /v2/apps?label=...``: parsing and matching, as documented.

Grammar (`apps.raml <https://github.com/mesosphere/marathon/blob/master/docs/docs/rest-api/public/api/v2/apps.raml>`_,
query parameter ``label``): one or more selectors separated by ``,``, all of which must hold:

* ``key`` -- the label exists;
* ``key==value`` / ``key!=value`` -- the label exists and equals / differs from the value;
* ``key in (a, b)`` / ``key notin (a, b)`` -- the label exists and is / is not one of the values.

Terms are letters, digits, ``-``, ``_`` and ``.``; any other character is written with a backslash
before it (``tier!=frontend\\ tier``). Blanks between tokens are ignored. A query that does not parse is
an illegal argument: 422 ``{"message": "Can not parse label selector <query>. Reason: ..."}``.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["LabelSelectorError", "Selector", "parse_selectors"]

_TOKEN = re.compile(r"\s*(?:(?P<term>(?:\\.|[-A-Za-z0-9_.])+)|(?P<op>==|!=|[(),]))")


class LabelSelectorError(ValueError):
    """The query is not a label selector; the message is Marathon's 422 message."""


@dataclass(frozen=True)
class Selector:
    """One selector: a label key and a test on its value (only run when the label exists)."""

    key: str
    test: Callable[[str], bool]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels and self.test(labels[self.key])


def _unescape(term: str) -> str:
    return re.sub(r"\\(.)", r"\1", term)


def _tokens(query: str) -> list[tuple[str, str]]:
    """(kind, text) pairs; ``in``/``notin`` are terms here and told apart by the parser."""
    tokens = []
    position = 0
    while position < len(query):
        if query[position:].strip() == "":
            break
        match = _TOKEN.match(query, position)
        if match is None:
            raise ValueError(f"unexpected character {query[position:].lstrip()[:1]!r}")
        if match.group("term") is not None:
            tokens.append(("term", match.group("term")))
        else:
            tokens.append(("op", match.group("op")))
        position = match.end()
    return tokens


class _Parser:
    """Recursive descent over the tokens: ``selector {"," selector}``."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.index = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, kind: str, text: str | None, what: str) -> str:
        token = self.peek()
        if token is None or token[0] != kind or (text is not None and token[1] != text):
            found = repr(token[1]) if token else "end of input"
            raise ValueError(f"{what} expected but {found} found")
        self.index += 1
        return token[1]

    def selectors(self) -> list[Selector]:
        found = [self.selector()]
        while self.peek() is not None:
            self.take("op", ",", "','")
            found.append(self.selector())
        return found

    def selector(self) -> Selector:
        key = _unescape(self.take("term", None, "label"))
        token = self.peek()
        if token in (("op", "=="), ("op", "!=")):
            self.index += 1
            value = _unescape(self.take("term", None, "value"))
            if token == ("op", "=="):
                return Selector(key, lambda v: v == value)
            return Selector(key, lambda v: v != value)
        if token in (("term", "in"), ("term", "notin")):
            self.index += 1
            members = frozenset(self.value_set())
            if token == ("term", "in"):
                return Selector(key, lambda v: v in members)
            return Selector(key, lambda v: v not in members)
        return Selector(key, lambda _v: True)

    def value_set(self) -> list[str]:
        self.take("op", "(", "'('")
        values: list[str] = []
        if self.peek() != ("op", ")"):
            values.append(_unescape(self.take("term", None, "value")))
            while self.peek() == ("op", ","):
                self.index += 1
                values.append(_unescape(self.take("term", None, "value")))
        self.take("op", ")", "')'")
        return values


def parse_selectors(query: str) -> list[Selector]:
    """Parse ``query``; all returned selectors must match an app's labels for the app to be selected.

    Raises:
        LabelSelectorError: the query does not parse (Marathon answers 422 with its message).
    """
    if not query.strip():
        return []  # Marathon parses the empty query as no selector at all: every app matches.
    try:
        return _Parser(_tokens(query)).selectors()
    except ValueError as exc:
        raise LabelSelectorError(f"Can not parse label selector {query}. Reason: {exc}") from None
