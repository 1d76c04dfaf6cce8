"""The package layout: imports between revisit's packages point one way (no circles)."""

from __future__ import annotations

import grimp


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])  # revisit.identity.tracks -> revisit.identity


def test_no_package_imports_itself_through_others() -> None:
    graph = grimp.build_graph("revisit", cache_dir=None)
    edges: dict[str, set[str]] = {}
    via: dict[tuple[str, str], str] = {}
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = _package(module), _package(imported)
            if a != b:
                edges.setdefault(a, set()).add(b)
                via.setdefault((a, b), f"{module} -> {imported}")
    circles = []
    for start in sorted(edges):
        # depth-first from each package: a path back to it is a circle
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    circles.append(" | ".join(via[(x, y)] for x, y in
                                              zip(path, [*path[1:], start], strict=True)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not circles, "packages import each other:\n" + "\n".join(circles[:5])
