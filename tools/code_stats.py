"""Lines of code per package and the functions over a length limit, for hilcore/, kernels/ and bindings/.

A line of code is a line with something other than whitespace or a comment
(Python ``#``; C/C++/CUDA ``//`` and ``/* */``); a Python function's docstring
lines do not count. Python functions (methods and nested functions too) come
from :mod:`ast`; C/C++/CUDA function bodies from brace matching after comments
and string literals are blanked: a ``{`` that follows ``)`` (plus qualifiers
such as ``const``, ``noexcept`` or a trailing return type) outside any other
function opens one; lambdas and blocks inside it count towards it.

Usage::

    python tools/code_stats.py [ROOT] [--limit 100]

prints the lines of code per package (``hilcore/<sub>``, ``kernels/<sub>``,
``bindings``), then every function longer than ``--limit`` code lines; exits
with status 1 when there is one.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

PY_DIRS = ("hilcore",)
NATIVE_DIRS = ("kernels", "bindings")
NATIVE_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".h", ".hpp", ".cu", ".cuh")
_CONTROL = ("if", "for", "while", "switch", "catch", "do", "else", "try", "return")
_QUALIFIED_CLOSE = re.compile(r"\)\s*(?:(?:const|noexcept|override|final|mutable|volatile|&|&&)\s*|"
                              r"noexcept\s*\([^()]*\)\s*|->\s*[\w:<>,\s*&]+?)*$")


@dataclass(frozen=True)
class Function:
    path: str        # relative to the root, with forward slashes
    name: str
    line: int        # 1-based line of the signature
    code_lines: int


def code_line_count(lines) -> int:
    """Lines holding code (neither blank nor only a ``#`` / ``//`` comment)."""
    return sum(1 for ln in lines if ln.strip() and not ln.strip().startswith(("#", "//")))


# --------------------------------------------------------------------------------------------- python
def python_functions(path: Path, rel: str) -> list[Function]:
    """Every ``def`` of a Python file with its code lines (signature to last line, docstring lines excluded)."""
    text = path.read_text()
    lines = text.splitlines()
    out = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        n = code_line_count(lines[node.lineno - 1:node.end_lineno])
        body0 = node.body[0] if node.body else None
        if isinstance(body0, ast.Expr) and isinstance(getattr(body0, "value", None), ast.Constant) \
                and isinstance(body0.value.value, str):
            n -= code_line_count(lines[body0.lineno - 1:body0.end_lineno])
        out.append(Function(rel, node.name, node.lineno, n))
    return out


def python_code_lines(path: Path) -> int:
    return code_line_count(path.read_text().splitlines())


# --------------------------------------------------------------------------------------------- C / C++ / CUDA
def blank_comments_and_strings(text: str) -> str:
    """``text`` with comments, string and character literals replaced by spaces (newlines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        two = text[i:i + 2]
        if two == "//":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif two == "/*":
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == 'R' and text[i + 1:i + 2] == '"':          # raw string R"delim( ... )delim"
            m = re.match(r'R"([^(\s]*)\(', text[i:])
            end = text.find(")" + (m.group(1) if m else "") + '"', i) if m else -1
            j = n if end < 0 else end + len(m.group(1)) + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(" " * (j - i))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def native_functions(path: Path, rel: str) -> list[Function]:
    """Function bodies of a C/C++/CUDA file (outermost ones; those inside classes count one by one)."""
    text = blank_comments_and_strings(path.read_text())
    # preprocessor lines take no part in a declaration (a #define may hold braces and parentheses)
    text = re.sub(r"(?m)^[ \t]*#.*$", lambda m: " " * len(m.group(0)), text)
    out = []
    stack: list[str] = []                 # kinds of the open braces: "fn", "other"
    header_start = 0                      # offset where the current declaration began
    fn_open = None                        # (name, start offset) of the open outermost function
    for i, c in enumerate(text):
        if c == "{":
            header = text[header_start:i]
            kind = "other"
            if "fn" not in stack and _QUALIFIED_CLOSE.search(header.rstrip()):
                name = _function_name(header)
                if name is not None:
                    kind = "fn"
                    fn_open = (name, header_start + len(header) - len(header.lstrip()))
            stack.append(kind)
            header_start = i + 1
        elif c == "}":
            kind = stack.pop() if stack else "other"
            if kind == "fn" and fn_open is not None:
                name, start = fn_open
                first = text.count("\n", 0, start)
                last = text.count("\n", 0, i)
                body = text.splitlines()[first:last + 1]
                out.append(Function(rel, name, first + 1, code_line_count(body)))
                fn_open = None
            header_start = i + 1
        elif c == ";" and "fn" not in stack:
            header_start = i + 1
    return out


def _function_name(header: str) -> str | None:
    """The name before the parameter list of a function header, or None for control statements, lambdas,
    initialisers and the like."""
    h = re.sub(r"\s+", " ", header).strip()
    depth, j = 0, len(h) - 1
    close = h.rfind(")")
    if close < 0:
        return None
    for j in range(close, -1, -1):          # the "(" matching the last ")"
        depth += h[j] == ")"
        depth -= h[j] == "("
        if depth == 0:
            break
    m = re.search(r"([~\w:]+|operator\s*\S+)\s*$", h[:j])
    if m is None:
        return None
    name = m.group(1)
    if name.split("::")[-1] in _CONTROL:
        return None
    return name


def native_code_lines(path: Path) -> int:
    return code_line_count(blank_comments_and_strings(path.read_text()).splitlines())


# --------------------------------------------------------------------------------------------- the report
def package_of(rel: Path) -> str:
    return "/".join(rel.parts[:2]) if len(rel.parts) > 2 else rel.parts[0]


def scan(root) -> tuple[dict, list[Function]]:
    """``({package: code lines}, [every function])`` of the tree at ``root``."""
    root = Path(root)
    loc: dict = {}
    funcs: list[Function] = []
    for top in PY_DIRS + NATIVE_DIRS:
        for p in sorted((root / top).rglob("*")):
            if not p.is_file():
                continue
            rel = p.relative_to(root)
            if p.suffix == ".py":
                n, fs = python_code_lines(p), python_functions(p, rel.as_posix())
            elif p.suffix in NATIVE_SUFFIXES:
                n, fs = native_code_lines(p), native_functions(p, rel.as_posix())
            else:
                continue
            loc[package_of(rel)] = loc.get(package_of(rel), 0) + n
            funcs.extend(fs)
    return loc, funcs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--limit", type=int, default=100, help="longest allowed function, in code lines (100)")
    args = ap.parse_args(argv)
    loc, funcs = scan(args.root)
    for k in sorted(loc):
        print(f"{k:36s} {loc[k]:7d}")
    print(f"{'total':36s} {sum(loc.values()):7d}")
    long = sorted((f for f in funcs if f.code_lines > args.limit), key=lambda f: -f.code_lines)
    print(f"functions over {args.limit} code lines: {len(long)} (of {len(funcs)})")
    for f in long:
        print(f"  {f.code_lines:5d}  {f.path}:{f.line}  {f.name}")
    return 1 if long else 0


if __name__ == "__main__":
    sys.exit(main())
