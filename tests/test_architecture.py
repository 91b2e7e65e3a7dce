"""The house rules of the layout (issue 12), checked on the source text alone: no import, no torch.

Scanned: every module under ``engine/`` and ``kernels/``, and ``cli.py``. One checker per rule, each returning the
violations it found as readable lines; each is tried on the real tree and, to prove it can fail, on a small synthetic
tree holding one violation.

1. No import cycle between modules (every ``import`` counts, inside functions and ``if TYPE_CHECKING:`` too).
2. No module over 400 lines, no function over 80 (counted from the end of its signature, so the CLI's option
   declarations do not count), unless the file says why: ``# layout: long module — <reason>`` anywhere in the module,
   ``# layout: long function — <reason>`` on the ``def`` line or the line just above it (or above its decorators).
3. Only ``engine/store/`` imports SQLAlchemy or boto3/botocore, or constructs a database or an object store.
4. Only ``engine/media/`` imports a codec library (torchcodec, PyAV, torchaudio, PIL, cv2, torchvision.io) or runs the
   ffmpeg / ffprobe programs; Pillow as the PHash's reference aside (``CODEC_IMPORTS_ALLOWED``, with the reasons).
5. Only ``engine/config/`` reads or writes the environment (``os.environ``, ``os.getenv``, ...).
6. ``kernels/`` imports from the engine only leaf modules: modules that import nothing from ``engine``/``kernels``.
"""

from __future__ import annotations

import ast
import functools
import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INTERNAL_TOPS = {"engine", "kernels", "cli"}

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
LONG_MODULE_REASON = re.compile(r"^\s*#\s*layout:\s*long module\s*[—–-]+\s*\S")
LONG_FUNCTION_REASON = re.compile(r"#\s*layout:\s*long function\s*[—–-]+\s*\S")

STORE_LIBRARIES = ("sqlalchemy", "boto3", "botocore")
STORE_CONSTRUCTORS = {"Database", "open_object_store", "S3ObjectStore", "LocalObjectStore"}
CODEC_LIBRARIES = ("torchcodec", "av", "torchaudio", "PIL", "cv2", "torchvision.io")
CODEC_PROGRAMS = {"ffmpeg", "ffprobe"}
#: The only codec-library imports allowed outside engine/media/, each with the library and the reason. PHash must
#: equal imagededup's, which resizes with Pillow: Pillow's behaviour is the reference there, not a way to read media.
CODEC_IMPORTS_ALLOWED = {
    "engine/phash.py": ("PIL", "probes once which order the installed Pillow runs its two Lanczos passes in"),
    "engine/dedup.py": ("PIL", "imagededup's own PHash (Pillow underneath) is the tests' and benchmarks' reference"),
}
PROCESS_RUNNERS = {"run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}
ENVIRONMENT_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


# ------------------------------------------------------------------------------------------------- reading the tree


@dataclass
class Module:
    name: str  # dotted: engine.faces.detect; a package is its __init__: engine.faces
    path: Path
    rel: str  # path relative to the scanned root, with forward slashes
    is_package: bool
    source: str
    tree: ast.Module
    imports: list[tuple[int, list[str]]] = field(default_factory=list)  # (line, [base, *base.name]) per import
    edges: dict[str, int] = field(default_factory=dict)  # internal module imported -> first line importing it


def scanned_files(root: Path) -> Iterator[Path]:
    for top in ("engine", "kernels"):
        if (root / top).is_dir():
            yield from sorted(p for p in (root / top).rglob("*.py") if "__pycache__" not in p.parts)
    if (root / "cli.py").is_file():
        yield root / "cli.py"


def module_name(rel: Path) -> tuple[str, bool]:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def imported_names(tree: ast.AST, name: str, is_package: bool) -> Iterator[tuple[int, str, list[str]]]:
    """Each import as (line, base module, candidates): ``from a.b import c`` gives base ``a.b``, candidates [a.b.c]."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = ".".join(p for p in (package, node.module or "") if p)
            else:
                base = node.module or ""
            yield node.lineno, base, [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]


def resolve_internal(dotted: str, known: dict[str, Module]) -> str | None:
    """The scanned module a dotted name lives in (its longest known prefix), or None outside engine/kernels/cli."""
    if dotted.split(".")[0] not in INTERNAL_TOPS:
        return None
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


@functools.lru_cache(maxsize=1)
def repo_modules() -> dict[str, Module]:
    return load_modules(REPO)


def load_modules(root: Path) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for path in scanned_files(root):
        rel = path.relative_to(root)
        name, is_package = module_name(rel)
        source = path.read_text(encoding="utf-8")
        modules[name] = Module(name, path, rel.as_posix(), is_package, source, ast.parse(source, str(path)))
    for module in modules.values():
        for line, base, candidates in imported_names(module.tree, module.name, module.is_package):
            module.imports.append((line, [dotted for dotted in (base, *candidates) if dotted]))
            # `from engine.x import name` is the module engine.x.name when that is a module, else engine.x
            targets = [c if c in modules else base for c in candidates] or [base]
            for target in (resolve_internal(t, modules) for t in targets):
                if target is not None and target != module.name:
                    module.edges.setdefault(target, line)
    return modules


def under(module: Module, folder: str) -> bool:
    return module.rel.startswith(folder.rstrip("/") + "/")


def is_within(dotted: str, prefixes: tuple[str, ...]) -> bool:
    return any(dotted == p or dotted.startswith(p + ".") for p in prefixes)


def imports_within(module: Module, prefixes: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    """Each import statement of one of these libraries, as (line, the first name it imports from them)."""
    for line, names in module.imports:
        matched = [dotted for dotted in names if is_within(dotted, prefixes)]
        if matched:
            yield line, matched[0]


def aliases_of(tree: ast.AST, module: str) -> set[str]:
    """The local names bound to a standard module by ``import module [as alias]``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.asname or alias.name for alias in node.names if alias.name == module)
    return names


def names_from(tree: ast.AST, module: str, wanted: set[str]) -> set[str]:
    """The local names bound by ``from module import x [as y]`` for x in wanted."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == module and not node.level:
            names.update(alias.asname or alias.name for alias in node.names if alias.name in wanted)
    return names


def by_place(line: str) -> tuple[str, int, str]:
    """Sort key of a violation line ``path:line: what``: by file, then by line number."""
    path, _, rest = line.partition(":")
    number, _, _ = rest.partition(":")
    return (path, int(number), line) if number.isdigit() else (path, 0, line)


def called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


# ------------------------------------------------------------------------------------------------------ the rules


def import_cycles(modules: dict[str, Module]) -> list[str]:
    """Rule 1: each strongly connected group of modules, shown as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(modules[node].edges):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return [cycle_through(group, modules) for group in sorted(groups)]


def cycle_through(group: list[str], modules: dict[str, Module]) -> str:
    """The shortest import path from the group's first module back to itself, with the line of each import."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(modules[node].edges):
            if nxt == start:
                path = [*paths[node], start]
                return (
                    "import cycle: "
                    + " -> ".join(f"{a} (line {modules[a].edges[b]})" for a, b in zip(path, path[1:], strict=False))
                    + f" -> {start}"
                )
            if nxt in members and nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"no cycle found through {group}")  # unreachable for a strongly connected group


def function_body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the end of the signature (parameters, defaults, annotations, return type) to the end."""
    signature_parts: list[ast.AST] = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
    signature_parts += [a for a in (node.args.vararg, node.args.kwarg, node.returns) if a is not None]
    signature_parts += [d for d in (*node.args.defaults, *node.args.kw_defaults) if d is not None]
    signature_end = max([node.lineno, *(p.end_lineno or p.lineno for p in signature_parts)])
    return (node.end_lineno or node.lineno) - signature_end


def has_function_reason(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    candidates = {node.lineno, node.lineno - 1, first - 1}
    return any(1 <= n <= len(lines) and LONG_FUNCTION_REASON.search(lines[n - 1]) for n in candidates)


def oversized(modules: dict[str, Module]) -> list[str]:
    """Rule 2: modules over 400 lines, functions over 80, without a layout reason."""
    found = []
    for module in modules.values():
        lines = module.source.splitlines()
        if len(lines) > MAX_MODULE_LINES and not any(LONG_MODULE_REASON.match(line) for line in lines):
            found.append(f"{module.rel}: {len(lines)} lines (> {MAX_MODULE_LINES}, no '# layout: long module' reason)")
        for node in ast.walk(module.tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = function_body_lines(node)
            if length > MAX_FUNCTION_LINES and not has_function_reason(lines, node):
                found.append(
                    f"{module.rel}:{node.lineno}: function {node.name} is {length} lines "
                    f"(> {MAX_FUNCTION_LINES}, no '# layout: long function' reason)"
                )
    return sorted(found, key=by_place)


def store_outside_store(modules: dict[str, Module]) -> list[str]:
    """Rule 3: SQL / S3 libraries imported, or a database / object store constructed, outside engine/store/."""
    found = []
    for module in modules.values():
        if under(module, "engine/store"):
            continue
        for line, dotted in imports_within(module, STORE_LIBRARIES):
            found.append(f"{module.rel}:{line}: imports {dotted}")
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Call) and called_name(node) in STORE_CONSTRUCTORS:
                found.append(f"{module.rel}:{node.lineno}: constructs {called_name(node)}")
    return sorted(set(found), key=by_place)


def runs_codec_program(tree: ast.AST) -> int | None:
    """The line of a process launch, when the module also names the ffmpeg/ffprobe program; else None."""
    subprocess_names = aliases_of(tree, "subprocess")
    runner_names = names_from(tree, "subprocess", PROCESS_RUNNERS)
    os_names = aliases_of(tree, "os")
    launch = None
    names_program = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names_program |= Path(node.value).name in CODEC_PROGRAMS
        if isinstance(node, ast.Call) and launch is None:
            func = node.func
            if isinstance(func, ast.Name) and func.id in runner_names:
                launch = node.lineno
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                via_os = func.value.id in os_names and func.attr in {"system", "popen"}
                if func.value.id in subprocess_names or via_os:
                    launch = node.lineno
    return launch if names_program else None


def codecs_outside_media(modules: dict[str, Module]) -> list[str]:
    """Rule 4: codec libraries imported, or ffmpeg/ffprobe run, outside engine/media/."""
    found = []
    for module in modules.values():
        if under(module, "engine/media"):
            continue
        allowed = CODEC_IMPORTS_ALLOWED.get(module.rel, ("", ""))[0]
        for line, dotted in imports_within(module, CODEC_LIBRARIES):
            if not (allowed and is_within(dotted, (allowed,))):
                found.append(f"{module.rel}:{line}: imports {dotted}")
        line = runs_codec_program(module.tree)
        if line is not None:
            found.append(f"{module.rel}:{line}: runs a process and names ffmpeg/ffprobe")
    return sorted(set(found), key=by_place)


def environment_outside_config(modules: dict[str, Module]) -> list[str]:
    """Rule 5: the environment read or written outside engine/config/."""
    found = []
    for module in modules.values():
        if under(module, "engine/config"):
            continue
        os_names = aliases_of(module.tree, "os")
        direct = names_from(module.tree, "os", ENVIRONMENT_NAMES)
        for node in ast.walk(module.tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in os_names
                and node.attr in ENVIRONMENT_NAMES
            ):
                found.append(f"{module.rel}:{node.lineno}: os.{node.attr}")
            elif isinstance(node, ast.Name) and node.id in direct:
                found.append(f"{module.rel}:{node.lineno}: {node.id} (from os)")
    return sorted(set(found), key=by_place)


def kernels_importing_non_leaves(modules: dict[str, Module]) -> list[str]:
    """Rule 6: a kernels/ module importing an engine module that itself imports from engine/kernels."""
    found = []
    for module in modules.values():
        if not module.name.startswith("kernels"):
            continue
        for target, line in sorted(module.edges.items()):
            if target.split(".")[0] == "engine" and modules[target].edges:
                imports = ", ".join(sorted(modules[target].edges))
                found.append(f"{module.rel}:{line}: imports {target}, which is not a leaf (it imports {imports})")
    return found


# ------------------------------------------------------------------------------------------------ on the real tree


def _report(found: list[str]) -> str:
    return "\n" + "\n".join(found)


@pytest.mark.parametrize(
    "rule",
    [
        import_cycles,  # no import cycle
        oversized,  # no module over 400 lines, no function over 80, unless a `# layout:` reason says why
        store_outside_store,  # only engine/store opens databases and object stores
        codecs_outside_media,  # only engine/media opens codecs
        environment_outside_config,  # only engine/config reads the environment
        kernels_importing_non_leaves,  # kernels/ import only engine leaves
    ],
    ids=lambda rule: rule.__name__,
)
def test_house_rule_holds(rule: Callable[[dict], list[str]]) -> None:
    found = rule(repo_modules())
    assert not found, _report(found)


def test_the_scan_sees_the_tree() -> None:
    modules = repo_modules()
    assert {"cli", "engine", "kernels"} <= set(modules)
    assert len(modules) > 40


# ------------------------------------------------------------------------------ each rule can fail: synthetic trees


def make_tree(root: Path, files: dict[str, str]) -> dict[str, Module]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    for package in {p.parent for p in root.rglob("*.py")} - {root}:
        (package / "__init__.py").touch()
    return load_modules(root)


def test_a_cycle_is_reported_with_its_path(tmp_path: Path) -> None:
    modules = make_tree(
        tmp_path,
        {
            "engine/a.py": "from engine.b import thing\n",
            "engine/b.py": "def f():\n    from engine import c\n",  # inside a function: still an edge
            "engine/c.py": "import engine.a\n",
            "engine/leaf.py": "import os\n",
            "kernels/k.py": "from engine.leaf import x\n",
        },
    )
    assert import_cycles(modules) == [
        "import cycle: engine.a (line 1) -> engine.b (line 2) -> engine.c (line 1) -> engine.a"
    ]


def test_relative_imports_and_packages_are_nodes(tmp_path: Path) -> None:
    modules = make_tree(
        tmp_path,
        {"engine/p/__init__.py": "from .q import x\n", "engine/p/q.py": "from engine.p import y\n"},
    )
    assert import_cycles(modules) == ["import cycle: engine.p (line 1) -> engine.p.q (line 1) -> engine.p"]


def test_long_modules_and_functions_are_reported_unless_they_say_why(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES + 1))
    long_module = "".join(f"A{i} = {i}\n" for i in range(MAX_MODULE_LINES + 1))
    modules = make_tree(
        tmp_path,
        {
            "engine/long.py": long_module,
            "engine/excused.py": "# layout: long module — one table, read top-down\n" + long_module,
            "engine/f.py": "def too_long():\n" + body + "\n\n# layout: long function — one JIT kernel\n"
            "def excused():\n" + body,
            # option declarations in the signature do not count
            "cli.py": "def verb(\n" + "".join(f"    o{i}: int = 1,\n" for i in range(90)) + ") -> None:\n    pass\n",
        },
    )
    assert oversized(modules) == [
        f"engine/f.py:1: function too_long is {MAX_FUNCTION_LINES + 1} lines (> 80, no '# layout: long function' "
        "reason)",
        f"engine/long.py: {MAX_MODULE_LINES + 1} lines (> 400, no '# layout: long module' reason)",
    ]


#: One violation (or a permitted case) per rule on a synthetic tree: (rule, files, what it must report).
VIOLATIONS = [
    (
        store_outside_store,
        {
            "engine/store/db.py": "import sqlalchemy\nclass Database: ...\n",
            "engine/apps/x.py": "from sqlalchemy import text\nimport botocore.config\n",
            "cli.py": "from engine.store import db\ndef main():\n    return db.Database('sqlite://')\n",
        },
        ["cli.py:3: constructs Database", "engine/apps/x.py:1: imports sqlalchemy",
         "engine/apps/x.py:2: imports botocore.config"],
    ),
    (
        codecs_outside_media,
        {
            "engine/media/decode.py": "import torchcodec\nimport subprocess\nsubprocess.run(['ffprobe', 'x'])\n",
            "engine/logo.py": "from torchvision import io\nfrom torchvision import transforms\n",
            "engine/tools/t.py": "import subprocess as sp\nCMD = ['ffmpeg', '-i']\ndef go():\n    sp.run(CMD)\n",
            "engine/ok.py": "import subprocess\nsubprocess.run(['yt-dlp', 'url'])\n",
            "engine/phash.py": "def probe():\n    from PIL import Image\n    import cv2\n",  # PIL allowed here only
        },
        ["engine/logo.py:1: imports torchvision.io", "engine/phash.py:3: imports cv2",
         "engine/tools/t.py:4: runs a process and names ffmpeg/ffprobe"],
    ),
    (
        environment_outside_config,
        {
            "engine/config/settings.py": "import os\nX = os.environ.get('A')\n",
            "engine/a.py": "import os\nX = os.getenv('A')\n",
            "kernels/k.py": "from os import environ\ndef f():\n    environ['B'] = '1'\n",
        },
        ["engine/a.py:2: os.getenv", "kernels/k.py:3: environ (from os)"],
    ),
    (
        kernels_importing_non_leaves,
        {
            "engine/leaf.py": "import torch\n",
            "engine/busy.py": "from engine import leaf\n",
            "kernels/k.py": "from engine.leaf import a\nfrom engine.busy import b\n",
        },
        ["kernels/k.py:2: imports engine.busy, which is not a leaf (it imports engine.leaf)"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "files", "expected"), VIOLATIONS, ids=lambda x: getattr(x, "__name__", ""))
def test_a_violation_is_reported(
    tmp_path: Path, rule: Callable[[dict], list[str]], files: dict[str, str], expected: list[str]
) -> None:
    assert rule(make_tree(tmp_path, files)) == expected
