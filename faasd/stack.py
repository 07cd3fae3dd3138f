"""OpenFaaS ``stack.yml`` files: parse, substitute ``${VAR}``, validate with line numbers.

The format is faas-cli's (``version``, ``provider.gateway``, ``functions.<name>.{lang, handler, image,
fprocess, environment, environment_file, labels, annotations, secrets, limits, requests, constraints,
readonly_root_filesystem, ...}``), so an existing stack file deploys unchanged. As faas-cli does,
``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` are substituted in the file's text before YAML
parsing (an unset variable without a default becomes empty).

Keys faas-cli knows but that mean nothing here (``build_options``, ``skip_build``, ...) and keys nobody
knows are reported as warnings naming the key and line; a malformed file or value is a
:class:`StackError` with ``file:line``. Pure apart from reading the files it is pointed at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from faasd.errors import InvalidRequest
from faasd.namespace import check_namespace
from faasd.providers.types import FunctionSpec, Resources, validate_function_name
from faasd.templates import TEMPLATES

__all__ = ["Stack", "StackError", "StackFunction", "load_stack", "parse_stack", "substitute"]

_TOP_KEYS = frozenset({"version", "provider", "functions", "configuration"})
_PROVIDER_KEYS = frozenset({"name", "gateway", "network"})
_FUNCTION_KEYS = frozenset(
    {
        "lang",
        "handler",
        "image",
        "fprocess",
        "environment",
        "environment_file",
        "labels",
        "annotations",
        "secrets",
        "limits",
        "requests",
        "constraints",
        "readonly_root_filesystem",
        "namespace",
    }
)
_IGNORED_FUNCTION_KEYS = frozenset(
    {"skip_build", "build_options", "build_args", "build_secrets", "platforms", "redirect_url", "readiness"}
)
LANGUAGE_ALIASES = {"python3": "python", "python3-http": "python-http"}
"""OpenFaaS template names that map to faasd's templates (same handler interfaces)."""
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


class StackError(ValueError):
    """The stack file cannot be used; the message starts with ``file:line:`` where known."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StackFunction:
    """One function of a stack file, with paths resolved against the file's directory."""

    name: str
    lang: str = ""
    handler: str | None = None
    image: str = ""
    fprocess: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    limits: Resources | None = None
    requests: Resources | None = None
    readonly_root_filesystem: bool = False
    line: int = 0

    def to_spec(self, *, handler_archive: bytes = b"") -> FunctionSpec:
        """The FunctionDeployment for this function: ``fprocess`` key, else ``environment.fprocess``, else
        the ``lang`` template's; the template's settings (e.g. ``mode: python``) under ``environment``."""
        template = TEMPLATES.get(LANGUAGE_ALIASES.get(self.lang, self.lang))
        environment = {**(template.environment if template else {}), **self.environment}
        env_process = self.fprocess or self.environment.get("fprocess", "") or (template.fprocess if template else "")
        return FunctionSpec(
            name=self.name,
            image=self.image,
            env_process=env_process,
            env_vars=environment,
            constraints=self.constraints,
            secrets=self.secrets,
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            limits=self.limits,
            requests=self.requests,
            read_only_root_filesystem=self.readonly_root_filesystem,
            handler_archive=handler_archive,
        )


@dataclass(frozen=True, slots=True)
class Stack:
    path: str
    gateway: str
    functions: tuple[StackFunction, ...]
    warnings: tuple[str, ...]

    def function(self, name: str) -> StackFunction:
        for function in self.functions:
            if function.name == name:
                return function
        raise StackError(f"{self.path}: no function {name!r} (has: {', '.join(f.name for f in self.functions)})")


def substitute(text: str, env: Mapping[str, str]) -> str:
    """Replace ``${VAR}``, ``${VAR:-default}`` (unset or empty) and ``${VAR-default}`` (unset)."""

    def replace(match: re.Match[str]) -> str:
        name, operator, default = match.groups()
        value = env.get(name)
        if operator == ":-":
            return value if value else default
        if operator == "-":
            return value if value is not None else default
        return value or ""

    return _VARIABLE.sub(replace, text)


def load_stack(path: str, env: Mapping[str, str] | None = None) -> Stack:
    """Read and parse the stack file at ``path``.

    Raises:
        StackError: unreadable, not YAML, or invalid; the message says where.
    """
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise StackError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise StackError(f"{path}: not UTF-8 text") from None
    return parse_stack(text, path=path, env=os.environ if env is None else env)


def parse_stack(text: str, *, path: str = "stack.yml", env: Mapping[str, str]) -> Stack:
    """Parse stack file ``text`` (``path`` names it in messages and anchors relative paths)."""
    loader = yaml.SafeLoader(substitute(text, env))
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise StackError(f"{where}: not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    parser = _Parser(loader, path)
    return parser.stack(root)


class _Parser:
    """Walks the YAML node tree so every error and warning can name its line."""

    def __init__(self, loader: yaml.SafeLoader, path: str) -> None:
        self.loader = loader
        self.path = path
        self.base_dir = os.path.dirname(os.path.abspath(path))
        self.warnings: list[str] = []

    def error(self, node: yaml.Node | None, message: str) -> StackError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        return StackError(f"{self.path}{line}: {message}")

    def warn(self, node: yaml.Node, message: str) -> None:
        self.warnings.append(f"{self.path}:{node.start_mark.line + 1}: {message}")

    def stack(self, root: yaml.Node | None) -> Stack:
        if root is None:
            raise self.error(None, "empty file; expected 'functions:'")
        top = self.mapping(root, "the file")
        for key, (key_node, _) in top.items():
            if key not in _TOP_KEYS:
                self.warn(key_node, f"unknown key {key!r} (ignored)")
        gateway = ""
        if "provider" in top:
            provider = self.mapping(top["provider"][1], "provider")
            for key, (key_node, _) in provider.items():
                if key not in _PROVIDER_KEYS:
                    self.warn(key_node, f"unknown key {key!r} in provider (ignored)")
            if "gateway" in provider:
                gateway = self.string(provider["gateway"][1], "provider.gateway")
        if "functions" not in top:
            raise self.error(root, "no 'functions:' section")
        functions_node = top["functions"][1]
        functions = tuple(
            self.function(name, key_node, node)
            for name, (key_node, node) in self.mapping(functions_node, "functions").items()
        )
        if not functions:
            raise self.error(functions_node, "'functions:' is empty")
        return Stack(path=self.path, gateway=gateway, functions=functions, warnings=tuple(self.warnings))

    def function(self, name: str, key_node: yaml.Node, node: yaml.Node) -> StackFunction:
        try:
            validate_function_name(name, "function name")
        except InvalidRequest as exc:
            raise self.error(key_node, exc.message) from None
        where = f"functions.{name}"
        fields = self.mapping(node, where)
        values: dict[str, Any] = {}
        environment: dict[str, str] = {}
        for key, (k_node, v_node) in fields.items():
            label = f"{where}.{key}"
            if key in _IGNORED_FUNCTION_KEYS:
                self.warn(k_node, f"key {key!r} in function {name!r} has no effect in faasd (ignored)")
            elif key not in _FUNCTION_KEYS:
                self.warn(k_node, f"unknown key {key!r} in function {name!r} (ignored)")
            elif key == "namespace":
                try:
                    check_namespace(self.string(v_node, label), label)  # faasd's one: openfaas-fn.
                except InvalidRequest as exc:
                    raise self.error(v_node, exc.message) from None
            elif key in ("lang", "image", "fprocess"):
                values[key] = self.string(v_node, label)
                lang = LANGUAGE_ALIASES.get(values[key], values[key])
                if key == "lang" and lang not in TEMPLATES and lang != "dockerfile":  # faas-cli's own, image-built
                    known = ", ".join(sorted({*TEMPLATES, *LANGUAGE_ALIASES}))
                    self.warn(v_node, f"lang {values[key]!r} of {name!r} is not a faasd template ({known}): ignored")
            elif key == "handler":
                values["handler"] = os.path.normpath(os.path.join(self.base_dir, self.string(v_node, label)))
            elif key in ("labels", "annotations"):
                values[key] = self.string_map(v_node, label)
            elif key in ("secrets", "constraints"):
                values[key] = tuple(self.string_list(v_node, label))
            elif key in ("limits", "requests"):
                resources = self.string_map(v_node, label)
                unknown = set(resources) - {"memory", "cpu"}
                if unknown:
                    raise self.error(v_node, f"{label}: unknown resource {sorted(unknown)[0]!r}; use memory and cpu")
                values[key] = Resources(memory=resources.get("memory", ""), cpu=resources.get("cpu", ""))
            elif key == "readonly_root_filesystem":
                value = self.loader.construct_object(v_node, deep=True)
                if not isinstance(value, bool):
                    raise self.error(v_node, f"{label} must be true or false")
                values[key] = value
        # environment_file entries first, then environment: the inline values win (as faas-cli).
        if "environment_file" in fields:
            for file_name in self.string_list(fields["environment_file"][1], f"{where}.environment_file"):
                environment.update(self.environment_file(fields["environment_file"][1], file_name))
        if "environment" in fields:
            environment.update(self.string_map(fields["environment"][1], f"{where}.environment"))
        return StackFunction(name=name, environment=environment, line=key_node.start_mark.line + 1, **values)

    def environment_file(self, node: yaml.Node, file_name: str) -> dict[str, str]:
        path = os.path.join(self.base_dir, file_name)
        try:
            with open(path, encoding="utf-8") as file:
                document = yaml.safe_load(file)
        except OSError as exc:
            raise self.error(node, f"environment_file {file_name}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise self.error(node, f"environment_file {file_name} is not valid YAML: {exc}") from None
        if not isinstance(document, dict) or not isinstance(document.get("environment"), dict):
            raise self.error(node, f"environment_file {file_name} must have an 'environment:' mapping")
        return {str(k): _scalar_text(v) for k, v in document["environment"].items()}

    # -- typed accessors ----------------------------------------------------------------------------
    def mapping(self, node: yaml.Node, label: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{label} must be a mapping (key: value lines)")
        result: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(key_node, f"{label}: keys must be plain text")
            if key_node.value in result:
                raise self.error(key_node, f"{label}: duplicate key {key_node.value!r}")
            result[key_node.value] = (key_node, value_node)
        return result

    def string(self, node: yaml.Node, label: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, f"{label} must be text")
        value = self.loader.construct_object(node, deep=True)
        return "" if value is None else _scalar_text(value)

    def string_map(self, node: yaml.Node, label: str) -> dict[str, str]:
        return {key: self.string(value, f"{label}.{key}") for key, (_, value) in self.mapping(node, label).items()}

    def string_list(self, node: yaml.Node, label: str) -> list[str]:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, f"{label} must be a list (lines starting with '- ')")
        return [self.string(item, f"{label}[{index}]") for index, item in enumerate(node.value)]


def _scalar_text(value: object) -> str:
    """YAML scalars as env-style text: ``true`` stays ``true``, 10 stays ``10``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
