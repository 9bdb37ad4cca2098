#!/usr/bin/env python3
"""Checks the layout docs/ARCHITECTURE.md promises: no import cycle among the top-level modules of
src/, no source file over 700 lines, and a binary (dataflows/sessionize.rs) of at most 300 lines.

Usage: python3 scripts/check_layout.py [REPO]   (exit code 1 and one line per finding on failure)
"""
import re
import sys
from pathlib import Path

MAX_FILE_LINES = 700
MAX_BINARY_LINES = 300


def top_module(src: Path, path: Path) -> str:
    first = path.relative_to(src).parts[0]
    return first[:-3] if first.endswith(".rs") else first


def references(text: str) -> set:
    """The top-level modules a file names through `crate::`, in paths and in `use crate::{...}`
    (comments left out: a doc comment may point anywhere)."""
    text = re.sub(r"//[^\n]*", "", text)
    names = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
    for group in re.findall(r"\buse crate::\{([^}]*)\}", text):
        names.update(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
    return names


def cycles(graph: dict) -> list:
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    repo = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    src = repo / "src"
    modules = {top_module(src, p) for p in src.iterdir() if p.name not in ("lib.rs", "main.rs")}
    graph, problems = {m: set() for m in modules}, []
    for path in sorted(src.rglob("*.rs")):
        text = path.read_text()
        lines = text.count("\n")
        if lines > MAX_FILE_LINES:
            problems.append(f"{path.relative_to(repo)}: {lines} lines (at most {MAX_FILE_LINES})")
        if path.name == "lib.rs" and path.parent == src:
            continue
        module = top_module(src, path)
        graph[module].update(m for m in references(text) if m in modules and m != module)
    binary = repo / "dataflows" / "sessionize.rs"
    lines = binary.read_text().count("\n")
    if lines > MAX_BINARY_LINES:
        problems.append(f"{binary.relative_to(repo)}: {lines} lines (at most {MAX_BINARY_LINES})")
    for component in cycles(graph):
        problems.append("import cycle among src/ modules: " + " <-> ".join(component))
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
