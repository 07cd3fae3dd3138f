"""tests/doc_blocks.py: how the docs' command blocks are found and marked -- a typo in a marker is an
error rather than a block silently left out -- and that this checkout's docs parse, with the README's
deploy and call among the blocks run as written (tests/e2e/test_doc_commands.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.doc_blocks import DocBlockError, doc_files, parse_blocks

SAMPLE = """\
# Title

```sh
echo run
```

<!-- doc-test: serves -->
```sh
faasd up
```

<!-- doc-test: serves, needs root, needs bwrap -->
```bash
FAASD_SANDBOX=uid faasd up
```

<!-- doc-test: skip: changes the machine -->
```sh
sudo install
```

```python
print("not a command")
```

~~~console
echo tilde fence
~~~
"""


def _parse(tmp_path: Path, text: str) -> list[tuple[int, str, str, str, frozenset[str]]]:
    path = tmp_path / "doc.md"
    path.write_text(text)
    return [(b.line, b.language, b.kind, b.reason, b.needs) for b in parse_blocks(path)]


def test_blocks_and_markers(tmp_path: Path) -> None:
    assert _parse(tmp_path, SAMPLE) == [
        (3, "sh", "run", "", frozenset()),
        (8, "sh", "serves", "", frozenset()),
        (13, "bash", "serves", "", frozenset({"root", "bwrap"})),
        (18, "sh", "skip", "changes the machine", frozenset()),
        (22, "python", "run", "", frozenset()),
        (26, "console", "run", "", frozenset()),
    ]
    path = tmp_path / "doc.md"
    assert [b.is_command for b in parse_blocks(path)] == [True, True, True, True, False, True]
    assert parse_blocks(path)[0].text == "echo run\n"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("<!-- doc-test: skp: typo -->\n```sh\nx\n```\n", "unknown doc-test marker 'skp: typo'"),
        ("<!-- doc-test: skip: -->\n```sh\nx\n```\n", "needs a reason"),
        ("<!-- doc-test: serves, needs docker -->\n```sh\nx\n```\n", "unknown 'needs docker'"),
        ("<!-- doc-test: serves -->\n\n```sh\nx\n```\n", "on the line before a fence"),
        ("<!-- doc-test: serves -->\n```yaml\nx: 1\n```\n", "marker on a yaml block"),
        ("text\n<!-- doc-test: serves -->\n", "at the end of the file"),
        ("```\nx\n```\n", "fence without a language"),
        ("```sh\nx\n", "never closed"),
    ],
)
def test_malformed_docs_are_errors_naming_the_line(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(DocBlockError, match=error) as raised:
        _parse(tmp_path, text)
    assert str(raised.value).startswith(f"{tmp_path / 'doc.md'}:"), raised.value


def test_this_checkouts_docs_parse_and_the_readme_deploys_and_calls_as_written() -> None:
    blocks = {path.name: [b for b in parse_blocks(path) if b.is_command] for path in doc_files(ROOT)}
    assert {"README.md", "sandbox.md", "watchdog.md", "autoscaling.md"} <= set(blocks)
    readme = blocks["README.md"]
    run = [b for b in readme if b.kind == "run"]
    assert any("faasd deploy" in b.text for b in run) and any("/function/echo" in b.text for b in run)
