#!/usr/bin/env python3
"""The layering check (ARCHITECTURE.md, "What may import what").

Reads every `src/**/*.rs` file, finds the modules it refers to (`crate::a::b`
paths, `use crate::{a, b::c}` groups, `super::` paths, and the external crates
`kube` and `k8s_openapi`), and fails when
  1. a core module (oci, storage, metadata, auth, lifecycle, registry) reaches
     kube, k8s_openapi, the CRD module or the operator, directly or through any
     other module it imports; or
  2. the top-level modules of src/ import one another in a circle; or
  3. `config` imports any other module of the crate.
Test modules (`#[cfg(test)] mod tests { ... }` at the end of a file) are
skipped: a test may build a cluster object to check an adapter.
Run: python3 .ci/layering.py [--graph]
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
CORE = ["oci", "storage", "metadata", "auth", "lifecycle", "registry"]
KUBE_SIDE = ["kube", "k8s_openapi", "kubernetes"]
LEAVES = ["config"]


def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel


def strip_tests(text):
    """Drops a trailing `#[cfg(test)]` module and comments."""
    m = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod \w+ \{", text, re.M)
    if m:
        text = text[: m.start()]
    text = re.sub(r"//[^\n]*", "", text)
    return text


def expand_use_group(prefix, body):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e] (enough for module names)."""
    out = []
    depth = 0
    item = ""
    for ch in body + ",":
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            item = item.strip()
            if item:
                m = re.match(r"^([\w:]*?)::\{(.*)\}$", item, re.S)
                if m:
                    out += expand_use_group(prefix + "::" + m.group(1), m.group(2))
                else:
                    out.append(prefix + "::" + item.split(" as ")[0].strip())
            item = ""
        else:
            item += ch
    return out


def references(mod, text):
    """Top-level module names (and external kube crates) `text` refers to."""
    refs = set()
    paths = []
    for m in re.finditer(r"\buse\s+(crate|super|self)::\{(.*?)\};", text, re.S):
        paths += expand_use_group(m.group(1), m.group(2))
    for m in re.finditer(r"\b(crate|super)((?:::\w+)+)", text):
        paths.append(m.group(1) + m.group(2))
    for p in paths:
        parts = p.split("::")
        if parts[0] == "crate":
            if len(parts) > 1:
                refs.add(parts[1])
        elif parts[0] == "super":
            base = list(mod)
            while parts and parts[0] == "super":
                base = base[:-1]
                parts = parts[1:]
            target = base + parts
            if target:
                refs.add(target[0])
    for ext in ("kube", "k8s_openapi"):
        if re.search(r"(?<![\w:])%s::" % ext, text) or re.search(r"\buse\s+%s\b" % ext, text):
            refs.add(ext)
    return refs


def main():
    graph = {}
    files = {}
    for dirpath, _, names in os.walk(ROOT):
        for name in names:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            mod = module_of(path)
            if not mod:  # lib.rs / main.rs
                continue
            with open(path) as f:
                text = strip_tests(f.read())
            top = mod[0]
            for r in references(mod, text):
                if r == top or r in ("self",):
                    continue
                graph.setdefault(top, set()).add(r)
                files.setdefault((top, r), set()).add(os.path.relpath(path, os.path.join(ROOT, "..")))
            graph.setdefault(top, set())
    modules = {m for m in graph}
    if "--graph" in sys.argv:
        for m in sorted(graph):
            print(m, "->", ", ".join(sorted(graph[m])))
    problems = []

    def reach(start):
        seen, todo, via = set(), [start], {start: None}
        while todo:
            n = todo.pop()
            for r in graph.get(n, ()):
                if r not in seen:
                    seen.add(r)
                    via.setdefault(r, n)
                    todo.append(r)
        return seen, via

    def chain(via, start, end):
        out = [end]
        while out[-1] != start:
            out.append(via[out[-1]])
        out.reverse()
        return out

    for core in CORE:
        seen, via = reach(core)
        for bad in KUBE_SIDE:
            if bad in seen:
                hops = chain(via, core, bad)
                detail = "; ".join(
                    "%s -> %s (%s)" % (a, b, ", ".join(sorted(files.get((a, b), ["?"]))))
                    for a, b in zip(hops, hops[1:])
                )
                problems.append("core module `%s` reaches `%s`: %s" % (core, bad, detail))
    for leaf in LEAVES:
        for r in sorted(graph.get(leaf, ())):
            if r in modules:
                problems.append(
                    "`%s` must be a leaf but imports `%s` (%s)"
                    % (leaf, r, ", ".join(sorted(files[(leaf, r)])))
                )
    # Circles among top-level modules (Tarjan's strongly connected components).
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in modules:
                continue
            if w not in index:
                strong(w)
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
                sccs.append(sorted(comp))

    for v in sorted(modules):
        if v not in index:
            strong(v)
    for comp in sccs:
        edges = [
            "%s -> %s (%s)" % (a, b, ", ".join(sorted(files[(a, b)])))
            for a in comp
            for b in sorted(graph[a])
            if b in comp
        ]
        problems.append("import circle among %s: %s" % (", ".join(comp), "; ".join(edges)))
    if problems:
        for p in problems:
            print("layering:", p)
        print("layering: %d problem(s); see ARCHITECTURE.md" % len(problems))
        return 1
    print("layering: %d modules, core free of kube/CRD/operator, no import circle, config a leaf" % len(modules))
    return 0


if __name__ == "__main__":
    sys.exit(main())
