"""stack.yml parsing: the faas-cli format, substitution, warnings and errors with line numbers."""

from __future__ import annotations

import textwrap

import pytest

from faasd.providers.types import FunctionSpec, Resources
from faasd.stack import StackError, load_stack, parse_stack, substitute

STACK = textwrap.dedent(
    """\
    version: 1.0
    provider:
      name: openfaas
      gateway: ${OPENFAAS_URL:-http://127.0.0.1:8080}
    functions:
      catservice:
        lang: dockerfile
        handler: ./catservice
        image: faasd/watchdog:latest
        fprocess: cat
        environment:
          write_timeout: 10s
          retries: 3
          debug: true
        labels:
          com.openfaas.scale.min: 2
        annotations:
          topic: ${TOPIC}
        secrets:
          - api-key
        limits:
          memory: 128M
          cpu: "0.5"
        constraints:
          - node.platform.os == linux
        readonly_root_filesystem: true
      wc:
        environment:
          fprocess: wc
    """
)


def test_full_stack():
    stack = parse_stack(STACK, path="/srv/app/stack.yml", env={"TOPIC": "cron"})
    assert stack.gateway == "http://127.0.0.1:8080"
    assert stack.warnings == ()
    cat = stack.function("catservice")
    assert cat.handler == "/srv/app/catservice"
    assert cat.environment == {"write_timeout": "10s", "retries": "3", "debug": "true"}
    assert cat.labels == {"com.openfaas.scale.min": "2"}
    assert cat.annotations == {"topic": "cron"}
    assert cat.limits == Resources(memory="128M", cpu="0.5")
    assert cat.line == 6
    spec = cat.to_spec()
    assert spec.env_process == "cat" and spec.min_replicas == 2 and spec.read_only_root_filesystem
    assert stack.function("wc").to_spec().env_process == "wc"


def test_substitution_forms():
    env = {"SET": "v", "EMPTY": ""}
    assert substitute("${SET} ${UNSET} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", env) == "v  d d  d"


def test_gateway_from_env():
    stack = parse_stack(STACK, env={"OPENFAAS_URL": "http://gw:8080"})
    assert stack.gateway == "http://gw:8080"


def test_unknown_and_ignored_keys_are_warnings_with_lines():
    text = "functions:\n  f:\n    fprocess: cat\n    lnag: python\n    skip_build: true\nextra: 1\n"
    stack = parse_stack(text, path="s.yml", env={})
    assert "s.yml:4: unknown key 'lnag' in function 'f' (ignored)" in stack.warnings
    assert any(w.startswith("s.yml:5:") and "skip_build" in w for w in stack.warnings)
    assert "s.yml:6: unknown key 'extra' (ignored)" in stack.warnings


def test_a_lang_that_is_no_template_is_a_warning_and_known_ones_are_not():
    text = "functions:\n  f:\n    fprocess: cat\n    lang: golang\n  g:\n    lang: python3\n"
    stack = parse_stack(text, path="s.yml", env={})
    assert len(stack.warnings) == 1, stack.warnings
    assert stack.warnings[0].startswith("s.yml:4: lang 'golang' of 'f' is not a faasd template (")
    assert "python" in stack.warnings[0] and "bash" in stack.warnings[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "s.yml: empty file"),
        ("functions: [\n", "s.yml:2: not valid YAML"),
        ("version: 1.0\n", "no 'functions:' section"),
        ("functions:\n", "'functions:' is empty"),
        ("functions:\n  bad name:\n    fprocess: cat\n", "s.yml:2: function name 'bad name'"),
        ("functions:\n  f:\n    environment: [a, b]\n", "s.yml:3: functions.f.environment must be a mapping"),
        ("functions:\n  f:\n    secrets: key\n", "s.yml:3: functions.f.secrets must be a list"),
        ("functions:\n  f:\n    limits:\n      disk: 1G\n", "s.yml:4: functions.f.limits: unknown resource 'disk'"),
        ("functions:\n  f:\n    readonly_root_filesystem: maybe\n", "s.yml:3: functions.f.readonly_root_filesystem"),
        ("functions:\n  f: {}\n  f: {}\n", "s.yml:3: functions: duplicate key 'f'"),
        ("functions:\n  a.b:\n    fprocess: cat\n", "s.yml:2: function name 'a.b' may not contain '.'"),
        (
            "functions:\n  f:\n    fprocess: cat\n    namespace: dev\n",
            "s.yml:4: namespace 'dev' does not exist: faasd has one namespace, openfaas-fn",
        ),
    ],
)
def test_errors_name_file_and_line(text, message):
    with pytest.raises(StackError) as info:
        parse_stack(text, path="s.yml", env={})
    assert message in str(info.value)


def test_the_one_namespace_may_be_named():
    """faas-cli's stack files often say namespace: openfaas-fn; that is faasd's one namespace."""
    text = (
        "functions:\n  f:\n    fprocess: cat\n    namespace: openfaas-fn\n  g:\n    fprocess: cat\n    namespace: ''\n"
    )
    stack = parse_stack(text, path="s.yml", env={})
    assert stack.warnings == ()
    assert stack.function("f").to_spec() == FunctionSpec(name="f", env_process="cat")
    assert stack.function("g").to_spec() == FunctionSpec(name="g", env_process="cat")


def test_environment_file_is_merged_under_inline_values(tmp_path):
    (tmp_path / "env.yml").write_text("environment:\n  a: from-file\n  b: from-file\n")
    (tmp_path / "stack.yml").write_text(
        "functions:\n  f:\n    fprocess: env\n    environment_file:\n      - env.yml\n"
        "    environment:\n      b: inline\n"
    )
    stack = load_stack(str(tmp_path / "stack.yml"), env={})
    assert stack.function("f").environment == {"a": "from-file", "b": "inline"}


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(StackError, match="cannot read"):
        load_stack(str(tmp_path / "nope.yml"), env={})
