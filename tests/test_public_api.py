"""Tests for the public surface of ryng_async: __all__, docstrings and the error tree."""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import pickle
import pkgutil
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import ryng_async
from ryng_async import testing

# Private modules whose __all__ feeds the package's (the CLI and __main__ are not imported:
# one needs an optional extra, the other runs the program).
SUBMODULES = [
    "_batching",
    "_bulk",
    "_callback_events",
    "_client",
    "_clock",
    "_config",
    "_events",
    "_exceptions",
    "_models",
    "_ratelimit",
    "_report",
    "_retry",
    "_sheet",
    "_validate",
]

# What CONTRACT.md names as the public surface.
CONTRACT_NAMES = {
    "RyngClient",
    "Lead",
    "AgentMapping",
    "AppendResponse",
    "ConnectCallback",
    "TerminalCallback",
    "parse_callback",
    "BulkReport",
    "BatchResult",
    "RetryPolicy",
    "RetryDetails",
    "RyngError",
    "ConfigurationError",
    "ValidationError",
    "APIError",
    "AuthenticationError",
    "RateLimitError",
    "ServerError",
    "TransportError",
    "ConnectError",
    "AmbiguousError",
    "ResourceError",
    "__version__",
}


def submodule(name: str) -> ModuleType:
    return importlib.import_module(f"ryng_async.{name}")


def isort_key(name: str) -> tuple[int, list[Any]]:
    """The order ruff's RUF022 uses: CONSTANTS, then Classes, then the rest, naturally."""
    if len(name) > 1 and name.isupper():
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    natural = [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
    return group, natural


def attribute_docstrings(module: ModuleType) -> dict[str, str]:
    """Module-level ``NAME = ...`` followed by a string literal: the attribute docstrings."""
    tree = ast.parse(Path(inspect.getsourcefile(module) or "").read_text())
    docs: dict[str, str] = {}
    body = tree.body
    for statement, following in itertools.pairwise(body):
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
        elif isinstance(statement, ast.AnnAssign):
            target = statement.target
        else:
            continue
        if (
            isinstance(target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[target.id] = following.value.value
    return docs


def own_docstring(obj: Any) -> str:
    """The docstring written for ``obj`` itself (not inherited, not generated)."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    if not isinstance(doc, str):
        return ""
    name = getattr(obj, "__name__", "")
    if doc.startswith(f"{name}(") or doc == "An enumeration.":
        return ""  # dataclass / enum boilerplate
    return doc.strip()


# -- __all__ ---------------------------------------------------------------------------


def test_all_is_sorted_as_ruff_sorts_it() -> None:
    assert ryng_async.__all__ == sorted(ryng_async.__all__, key=isort_key)


def test_all_has_no_duplicates_and_every_name_exists() -> None:
    names = ryng_async.__all__
    assert len(names) == len(set(names))
    missing = [name for name in names if not hasattr(ryng_async, name)]
    assert missing == []


def test_all_lists_every_public_name_of_the_package() -> None:
    public = {
        name
        for name, value in vars(ryng_async).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(ryng_async.__all__) - {"__version__"}


def test_contract_names_are_exported() -> None:
    assert CONTRACT_NAMES - set(ryng_async.__all__) == set()
    assert isinstance(ryng_async.__version__, str)
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?\S*", ryng_async.__version__)


@pytest.mark.parametrize("name", SUBMODULES)
def test_submodule_all_names_exist_and_are_sorted(name: str) -> None:
    module = submodule(name)
    names = module.__all__
    assert len(names) == len(set(names))
    assert [n for n in names if not hasattr(module, n)] == []
    assert names == sorted(names, key=isort_key)


def test_package_reexports_come_from_a_submodule_all() -> None:
    owners: dict[str, str] = {}
    for name in SUBMODULES:
        for exported in submodule(name).__all__:
            owners.setdefault(exported, name)
    orphans = [name for name in ryng_async.__all__ if name != "__version__" and name not in owners]
    assert orphans == []
    for name in ryng_async.__all__:
        if name in owners:
            assert getattr(ryng_async, name) is getattr(submodule(owners[name]), name), name


def test_exported_classes_and_functions_live_in_ryng_async() -> None:
    for name in ryng_async.__all__:
        value = getattr(ryng_async, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__.startswith("ryng_async."), (name, value.__module__)


def test_testing_module_exports() -> None:
    assert testing.__all__ == sorted(testing.__all__, key=isort_key)
    assert {"FakeRyngServer", "Fault", "FaultPlan"} <= set(testing.__all__)
    assert all(hasattr(testing, name) for name in testing.__all__)


# -- docstrings ------------------------------------------------------------------------


# The modules the documentation site's API reference renders (docs/reference/): every name
# in their __all__ is a public name and needs a docstring the reference can show.
REFERENCE_MODULES = [
    "ryng_async",
    "ryng_async.checkpoint",
    "ryng_async.callbacks",
    "ryng_async.testing",
    "ryng_async.redis",
    "ryng_async.metrics",
    "ryng_async.tracing",
    "ryng_async.dataframes",
    "ryng_async.sync",
]
_MISSING = object()


def _documented_names() -> list[tuple[str, str]]:
    return [
        (package, name)
        for package in REFERENCE_MODULES
        for name in importlib.import_module(package).__all__
        if name != "__version__"
    ]


def _library_modules() -> list[ModuleType]:
    """Every module of the package but the command line's (it needs the ``cli`` extra)."""
    names = [
        info.name
        for info in pkgutil.walk_packages(ryng_async.__path__, "ryng_async.")
        if not info.name.startswith(("ryng_async.cli", "ryng_async.__main__"))
    ]
    return [ryng_async, *map(importlib.import_module, names)]


def _attribute_docstring(package: str, name: str) -> str:
    """The docstring under ``name``'s assignment, in whichever module assigns that value."""
    value = getattr(importlib.import_module(package), name)
    for module in _library_modules():
        if vars(module).get(name, _MISSING) is value:
            doc = attribute_docstrings(module).get(name, "").strip()
            if doc:
                return doc
    return ""


def test_the_reference_pages_render_exactly_these_modules() -> None:
    pages = (Path(__file__).resolve().parent.parent / "docs" / "reference").glob("*.md")
    rendered = sorted(
        line.removeprefix("::: ").strip()
        for page in pages
        for line in page.read_text().splitlines()
        if line.startswith("::: ")
    )
    assert rendered == sorted(REFERENCE_MODULES)


def test_the_docstring_check_sees_a_missing_docstring() -> None:
    assert _attribute_docstring("ryng_async", "DEFAULT_BATCH_SIZE")
    assert not _attribute_docstring("ryng_async.callbacks", "callback_url")  # a function's
    assert not own_docstring(type("Bare", (), {}))


@pytest.mark.parametrize(("package", "name"), _documented_names())
def test_every_public_name_has_a_docstring(package: str, name: str) -> None:
    module = importlib.import_module(package)
    value = getattr(module, name)
    if inspect.isclass(value) or inspect.isfunction(value):
        doc = own_docstring(value)
    else:  # constants and type aliases: an attribute docstring under the assignment
        doc = _attribute_docstring(package, name)
    assert doc, f"{package}.{name} has no docstring"
    assert doc.splitlines()[0].strip(), f"{package}.{name}: the summary line is empty"


_RST = re.compile(r"::$|:(?:class|func|meth|attr|mod|exc):`", re.M)


def _reference_docstrings() -> list[tuple[str, str]]:
    """Every docstring the API reference renders: modules, public names, their methods."""
    docs = []
    for package in REFERENCE_MODULES:
        module = importlib.import_module(package)
        docs.append((package, module.__doc__ or ""))
        for name in module.__all__:
            value = getattr(module, name)
            docs.append((f"{package}.{name}", inspect.getdoc(value) or ""))
            if inspect.isclass(value):
                for attr, member in vars(value).items():
                    if not attr.startswith("_"):
                        docs.append((f"{package}.{name}.{attr}", inspect.getdoc(member) or ""))
    return docs


def test_docstrings_are_markdown_not_restructured_text() -> None:
    # mkdocstrings renders docstrings as Markdown: a reST literal marker ("Example::") or a
    # role (:class:`X`) would show as typed. An indented block after a blank line is code.
    found = [where for where, doc in _reference_docstrings() if _RST.search(doc)]
    assert len(_reference_docstrings()) > 200
    assert not found, f"reST markup in docstrings: {found}"


@pytest.mark.parametrize(("package", "name"), _documented_names())
def test_public_methods_have_docstrings(package: str, name: str) -> None:
    value = getattr(importlib.import_module(package), name)
    if not inspect.isclass(value):
        return
    undocumented = []
    for attr, member in vars(value).items():
        if attr.startswith("_"):
            continue
        function = member.fget if isinstance(member, property) else member
        function = getattr(function, "__func__", function)
        if inspect.isfunction(function) and not (function.__doc__ or "").strip():
            undocumented.append(attr)
    assert undocumented == [], f"{package}.{name}"


def test_package_and_modules_have_docstrings() -> None:
    for package in REFERENCE_MODULES:
        assert (importlib.import_module(package).__doc__ or "").strip(), package
    for name in SUBMODULES:
        assert (submodule(name).__doc__ or "").strip(), name


# -- the error tree (CONTRACT section 3) -----------------------------------------------

TREE = [
    ("ConfigurationError", "RyngError"),
    ("ValidationError", "RyngError"),
    ("APIError", "RyngError"),
    ("AuthenticationError", "APIError"),
    ("RateLimitError", "APIError"),
    ("ServerError", "APIError"),
    ("TransportError", "RyngError"),
    ("ConnectError", "TransportError"),
    ("AmbiguousError", "TransportError"),
    ("ResourceError", "RyngError"),
    ("ResourceLimitError", "ResourceError"),
]


def test_ryng_error_is_an_exception() -> None:
    assert issubclass(ryng_async.RyngError, Exception)
    assert ryng_async.RyngError.__bases__ == (Exception,)


@pytest.mark.parametrize(("child", "parent"), TREE)
def test_error_tree_parent(child: str, parent: str) -> None:
    child_class = getattr(ryng_async, child)
    parent_class = getattr(ryng_async, parent)
    assert child_class.__bases__ == (parent_class,)
    assert issubclass(child_class, ryng_async.RyngError)


def test_error_tree_has_no_cross_links() -> None:
    names = [child for child, _ in TREE]
    classes = {name: getattr(ryng_async, name) for name in names}
    branches = [
        "ConfigurationError",
        "ValidationError",
        "APIError",
        "TransportError",
        "ResourceError",
    ]
    for name, cls in classes.items():
        branch_hits = [b for b in branches if issubclass(cls, classes[b])]
        assert len(branch_hits) == 1, (name, branch_hits)
    assert not issubclass(ryng_async.ConnectError, ryng_async.AmbiguousError)
    assert not issubclass(ryng_async.AmbiguousError, ryng_async.ConnectError)
    assert not issubclass(ryng_async.RateLimitError, ryng_async.ServerError)


def test_error_attributes() -> None:
    api = ryng_async.APIError("Bad Request", status=400, body='{"error":true}')
    assert (api.status, api.message, api.body) == (400, "Bad Request", '{"error":true}')
    limited = ryng_async.RateLimitError("Too Many Requests", retry_after=2.0)
    assert limited.status == 429
    assert limited.retry_after == 2.0
    assert ryng_async.RateLimitError("x").retry_after is None
    invalid = ryng_async.ValidationError("is required", field="number", position=4)
    assert (invalid.field, invalid.position, invalid.reason) == ("number", 4, "is required")
    assert ryng_async.RyngError("x").report is None


def every_error() -> list[ryng_async.RyngError]:
    return [
        ryng_async.RyngError("plain"),
        ryng_async.ConfigurationError("bad option"),
        ryng_async.ResourceError("the disk is full"),
        ryng_async.ResourceLimitError("out of fds", errno=24, limit=1024),
        ryng_async.ValidationError("is required", field="number", position=4),
        ryng_async.APIError("Bad Request", status=400, body='{"error":true}'),
        ryng_async.AuthenticationError("Unauthorized Token", status=403),
        ryng_async.RateLimitError("Too Many Requests", retry_after=2.5),
        ryng_async.ServerError("Failed to create Campaign", status=500),
        ryng_async.TransportError("no answer"),
        ryng_async.ConnectError("refused"),
        ryng_async.AmbiguousError("timed out after sending"),
        ryng_async.UnreadableResponseError("empty body", status=200, body=""),
    ]


@pytest.mark.parametrize("error", every_error(), ids=lambda e: type(e).__name__)
def test_every_error_pickles_with_its_attributes(error: ryng_async.RyngError) -> None:
    error.report = {"stand-in": "report"}
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert type(again) is type(error)
    assert str(again) == str(error)
    assert again.args == error.args
    assert vars(again) == vars(error)


def test_runtime_failures_are_resource_errors_not_configuration_errors() -> None:
    from ryng_async.redis import RedisLimiterError

    assert RedisLimiterError.__bases__ == (ryng_async.ResourceError,)
    for runtime in (RedisLimiterError, ryng_async.ResourceLimitError):
        assert not issubclass(runtime, ryng_async.ConfigurationError), runtime


def test_exceptions_module_draws_the_tree() -> None:
    doc = submodule("_exceptions").__doc__ or ""
    for child, _ in TREE:
        assert child in doc
    assert "RyngError" in doc
