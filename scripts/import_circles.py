#!/usr/bin/env python3
"""Finds import circles between the files of each crate of the workspace.

A file imports another when its `use` declarations or paths
(`crate::a::b`, `super::x`, a child module's name, a name it imported)
name an item the other file defines; a path through a `pub use`
re-export is followed to the file defining the item. A `pub use` line
alone is a module's face, not an import, unless the file also uses the
name itself. The crate root (lib.rs, main.rs) is left out: it declares
the modules and re-exports their items. An inline `mod tests` at a
file's end adds nothing (its `super` is the file itself).

Prints every circle (its files, and which of them each imports) and exits
1 when there is one, 0 otherwise. Usage: scripts/import_circles.py [ROOT]
"""
import os
import re
import sys

ITEM = re.compile(
    r'^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+|unsafe\s+|const\s+)*'
    r'(?:struct|enum|fn|trait|type|const|static|union|macro_rules!)\s+([A-Za-z_][A-Za-z0-9_]*)',
    re.M,
)
USE = re.compile(r'\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);')
PUB_USE = re.compile(r'\bpub(?:\([^)]*\))?\s+use\s+[^;]+;')
PATH = re.compile(r'(?<![A-Za-z0-9_:])((?:[A-Za-z_][A-Za-z0-9_]*::)+[A-Za-z_][A-Za-z0-9_]*)')


def strip(text):
    """The code of a file: no inline tests module, comments or strings."""
    tests = text.find('#[cfg(test)]\nmod tests {')
    if tests >= 0:
        text = text[:tests]
    text = re.sub(r'//[^\n]*', '', text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def use_leaves(text):
    """(is pub, path, name bound) of every leaf of every `use` tree."""
    leaves = []

    def expand(prefix, tree, public):
        tree = tree.strip()
        if not tree:
            return
        if '{' in tree and tree.endswith('}'):
            at = tree.index('{')
            head = [part for part in tree[:at].split('::') if part]
            depth, current, parts = 0, '', []
            for char in tree[at + 1:-1]:
                depth += (char == '{') - (char == '}')
                if char == ',' and depth == 0:
                    parts.append(current)
                    current = ''
                else:
                    current += char
            parts.append(current)
            for part in parts:
                expand(prefix + head, part, public)
        else:
            named = tree.split(' as ')
            segments = [part.strip() for part in named[0].split('::') if part.strip()]
            bound = named[1].strip() if len(named) > 1 else (segments[-1] if segments else None)
            leaves.append((public, tuple(prefix + segments), bound))

    for found in USE.finditer(text):
        expand([], found.group(2), bool(found.group(1)))
    return leaves


def modules(src):
    """Module path -> file, for one crate's source folder."""
    files = {}
    for folder, _, names in os.walk(src):
        if os.path.basename(folder) == 'bin':
            continue
        for name in names:
            if name.endswith('.rs'):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, src)[:-3].split(os.sep)
                if parts[-1] in ('lib', 'main', 'mod'):
                    parts = parts[:-1]
                files[tuple(parts)] = path
    return files


def circles_of(src):
    """The circles among one crate's files, each with its edges."""
    files = modules(src)
    mods = set(files)
    texts = {module: strip(open(path, encoding='utf-8').read()) for module, path in files.items()}
    defined = {module: set(ITEM.findall(text)) for module, text in texts.items()}
    uses = {module: use_leaves(text) for module, text in texts.items()}

    def absolute(module, segments):
        if not segments:
            return None
        head = segments[0]
        if head == 'crate':
            return segments[1:]
        if head == 'self':
            return module + segments[1:]
        if head == 'super':
            base = module
            while segments and segments[0] == 'super':
                base, segments = base[:-1], segments[1:]
            return base + segments
        if module + (head,) in mods:
            return module + segments
        for _, path, bound in uses[module]:
            if bound == head and path and path[0] != head:
                found = absolute(module, path)
                if found is not None:
                    return found + segments[1:]
        return None

    def defining_file(path, depth=0):
        if depth > 20 or path is None:
            return None
        cut = len(path)
        while cut > 0 and path[:cut] not in mods:
            cut -= 1
        module = path[:cut]
        if cut == len(path):
            return module
        name = path[cut]
        if name in defined[module]:
            return module
        for public, target, bound in uses[module]:
            if bound == name and public:
                found = defining_file(absolute(module, target), depth + 1)
                if found is not None:
                    return found
        if module + (name,) in mods:
            return module + (name,)
        return module

    graph = {module: set() for module in mods}
    for module in mods:
        body = PUB_USE.sub('', texts[module])
        named = lambda bound: re.search(r'(?<![A-Za-z0-9_])' + re.escape(bound) + r'(?![A-Za-z0-9_])', body)
        paths = [path for public, path, bound in uses[module] if not public or (bound and named(bound))]
        paths += [tuple(found.group(1).split('::')) for found in PATH.finditer(body)]
        for path in paths:
            if path and path[-1] == '*':
                path = path[:-1]
            if not path:
                continue
            local = path[0] in ('crate', 'self', 'super') or module + (path[0],) in mods
            if not local and not any(bound == path[0] for _, _, bound in uses[module]):
                continue
            target = defining_file(absolute(module, path))
            if target not in (None, module, ()):
                graph[module].add(target)

    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def connect(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(graph):
        if node not in index:
            connect(node)
    shown = {module: os.path.relpath(path, src) for module, path in files.items()}
    return [(component, graph, shown) for component in found]


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..')
    crates = {name: os.path.join(root, name, 'src') for name in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, name, 'src'))}
    crates['histflow'] = os.path.join(root, 'src')
    total = 0
    for crate, src in crates.items():
        for component, graph, shown in circles_of(src):
            show = shown.get
            total += 1
            print(f'{crate}: a circle of {len(component)} files')
            for module in component:
                print(f'    {show(module)} imports {", ".join(show(other) for other in sorted(graph[module] & set(component)))}')
    if total:
        print(f'{total} import circle(s): move what both sides need into a file of its own, or invert the dependency')
        return 1
    print('no import circles between files')
    return 0


if __name__ == '__main__':
    sys.exit(main())
