#!/usr/bin/env python3
"""The layering check (docs/design.md, "Layers"): reads the layer table from docs/design.md and the
symbols each object of the library defines and uses (nm on the static archive), and fails when an
object uses one in a higher layer, when objects call each other in a cycle (within a layer too), or
when an object is missing from the table. The table is the one place the layers are written down, so
the picture in the docs is the code's.

usage: check-layers.py DESIGN_MD LIBNATPROXY_A"""

import re
import subprocess
import sys


def read_layers(path):
    """[(layer name, [object names])], bottom up, from the first table under '## Layers'."""
    layers = []
    in_section = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("## "):
                if in_section and layers:
                    break
                in_section = line.strip() == "## Layers"
                continue
            if not in_section or not line.startswith("|"):
                if in_section and layers and not line.strip():
                    break
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 2 or cells[0] in ("layer", "---") or set(cells[0]) <= set("-: "):
                continue
            files = re.findall(r"`([A-Za-z0-9_]+)\.c`", cells[1])
            layers.append((cells[0], files))
    return layers


def read_objects(archive):
    """{object: (defined symbols, undefined symbols)} from nm -A on the archive."""
    out = subprocess.run(["nm", "-A", archive], capture_output=True, text=True, check=True).stdout
    objs = {}
    for line in out.splitlines():
        # "lib.a:member.o: 0000 T sym" or "lib.a:member.o:          U sym"
        m = re.match(r"^[^:]*:([^:]+)\.c\.o:\s*(?:[0-9a-fA-F]+\s+)?([A-Za-z])\s+(\S+)$", line)
        if not m:
            continue
        name, kind, sym = m.groups()
        defined, used = objs.setdefault(name, (set(), set()))
        if kind == "U":
            used.add(sym)
        elif kind in "TDBRVWG":
            defined.add(sym)
    return objs


def cycles(graph):
    """Strongly connected components with more than one object (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    design, archive = sys.argv[1:3]
    layers = read_layers(design)
    if not layers:
        print(f"{design}: no layer table under '## Layers'")
        return 1
    rank = {}
    problems = []
    for i, (layer, files) in enumerate(layers):
        for f in files:
            if f in rank:
                problems.append(f"{f}.c is listed twice ({layers[rank[f]][0]}, {layer})")
            rank[f] = i
    objs = read_objects(archive)
    owner = {}
    for name, (defined, _) in objs.items():
        for sym in defined:
            owner[sym] = name
    for name in sorted(objs):
        if name not in rank:
            problems.append(f"{name}.c is in the library but in no layer of {design}")
    for f in sorted(rank):
        if f not in objs:
            problems.append(f"{f}.c is in the layer table but not in the library")
    graph = {}
    for name, (_, used) in sorted(objs.items()):
        for sym in sorted(used):
            dep = owner.get(sym)
            if dep is None or dep == name:
                continue
            graph.setdefault(name, {}).setdefault(dep, []).append(sym)
    for name, deps in sorted(graph.items()):
        for dep, syms in sorted(deps.items()):
            if name in rank and dep in rank and rank[dep] > rank[name]:
                problems.append(f"{name}.c ({layers[rank[name]][0]}) uses {dep}.c, a higher layer "
                                f"({layers[rank[dep]][0]}): {', '.join(syms)}")
    for comp in cycles({k: set(v) for k, v in graph.items()}):
        problems.append(f"a cycle: {', '.join(c + '.c' for c in comp)} call each other")
    edges = sum(len(d) for d in graph.values())
    if problems:
        print("\n".join(problems))
        print(f"{len(problems)} layering problems ({len(objs)} objects, {edges} uses between them)")
        return 1
    print(f"{len(objs)} objects in {len(layers)} layers, {edges} uses between them, all downward, "
          "no cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
