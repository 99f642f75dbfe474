"""Fail when any of our modules import each other in a cycle, or the agent protocol leans on the agent.

Counts every import statement — at module level, inside functions and under ``TYPE_CHECKING`` —
as grimp (the graph import-linter is built on) reads them, and prints each cycle found as a chain
of modules. Also: ``node_agent.protocol`` (the module both sides of the wire import) imports
nothing else of ``node_agent``, at any depth. Usage: ``python scripts/check_imports.py``.
"""

from __future__ import annotations

import sys

import grimp

PACKAGES = ("config", "node_agent", "controller", "balancer", "crmcluster")


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components with more than one module (or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                if len(comp) > 1 or node in graph.get(node, ()):
                    found.append(sorted(comp))
    return found


def main() -> int:
    g = grimp.build_graph(*PACKAGES, include_external_packages=False)
    graph = {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}
    cycles = strongly_connected(graph)
    for comp in cycles:
        members = set(comp)
        # One concrete chain through the component, for the reader.
        chain = [comp[0]]
        while True:
            nxt = sorted(graph[chain[-1]] & members)
            step = next((m for m in nxt if m not in chain), None)
            if step is None:
                back = next((m for m in nxt if m in chain), chain[0])
                chain.append(back)
                break
            chain.append(step)
        print("import cycle: " + " -> ".join(chain), file=sys.stderr)
    leaks = sorted(
        m
        for m in g.find_upstream_modules("node_agent.protocol")
        if m.startswith("node_agent.") and m != "node_agent.protocol"
    )
    for m in leaks:
        print(f"node_agent.protocol depends on {m}: the protocol must import only config", file=sys.stderr)
    if cycles or leaks:
        return 1
    print(f"no import cycles among {len(graph)} modules")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
