#!/usr/bin/env python3
"""What a change since BASE adds or modifies among the tests and conformance cases, for
scripts/stress.sh. Reads `git diff BASE` (the working tree, so uncommitted work counts)
and the untracked `.rs` files, and prints one line each:

    test PACKAGE NAME        a test function (nextest: package(PACKAGE) & test(NAME))
    case ID                  a conformance case (the runner's --case)
    column LABEL             a backend whose shared code changed: its whole column
    every-column WHY         shared code every column runs (core, kv, the harness)

How it decides, from the lines the diff changes (new side):
- a line inside a test function (`#[test]`, `#[tokio::test]`, `#[rstest]`) selects it;
- a line elsewhere in a test file (`tests/`, or a `mod tests` block) selects every test
  of that file: a changed helper is the tests' shared code;
- a line of conformance/src/cases/ selects the case whose `Case { .. }` it sits in, or,
  inside a function, every case whose `run` reaches that function through the cases'
  own calls;
- any other line of a backend's `src/` selects that backend's column; of core/, kv/,
  store/ or the conformance harness outside cases/, every column.
"""

import os
import re
import subprocess
import sys

TEST_ATTR = re.compile(r"^\s*#\[(test|tokio::test|rstest)\b")
FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+([A-Za-z_][A-Za-z0-9_]*)")
CASE_ID = re.compile(r'^\s*id:\s*"([^"]+)"')
# Backend crates' directories and the runner's column label of each.
COLUMNS = {
    "backend-etcd": "etcd",
    "backend-redis": "redis",
    "backend-postgres": "postgres",
    "backend-zookeeper": "zookeeper",
    "backend-mysql": "mysql",
    "backend-nats": "nats",
    "backend-memory": "memory",
}
SHARED = ("core/", "kv/", "store/", "conformance/src/")


def git(*args):
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def changed_lines(base):
    """{path: set of changed line numbers (new side)} for every changed `.rs` file."""
    changed = {}
    path = None
    for line in git("diff", "-U0", base, "--", "*.rs").splitlines():
        if line.startswith("+++ "):
            path = None if line.endswith("/dev/null") else line[6:]
        elif line.startswith("@@") and path:
            start, _, count = re.search(r"\+(\d+)(?:,(\d+))?", line).group(1, 0, 2)
            start, count = int(start), int(count) if count is not None else 1
            # A pure deletion (count 0) touches the line it was removed before.
            changed.setdefault(path, set()).update(range(start, start + max(count, 1)))
    for path in git("ls-files", "--others", "--exclude-standard", "--", "*.rs").splitlines():
        with open(path, encoding="utf-8") as source:
            changed[path] = set(range(1, sum(1 for _ in source) + 2))
    return changed


def functions(lines):
    """[(name, first line, last line, is a test)] of every `fn` with a body, 1-based;
    a function's extent is counted by braces (enough for this code base's style)."""
    found = []
    for index, text in enumerate(lines):
        match = FN.match(text)
        if not match:
            continue
        attr = index - 1
        while attr >= 0 and lines[attr].strip().startswith(("#[", "///", "//")):
            attr -= 1
        is_test = any(TEST_ATTR.match(lines[i]) for i in range(attr + 1, index))
        depth, end, opened = 0, index, False
        for end in range(index, len(lines)):
            code = re.sub(r'"(\\.|[^"\\])*"|//.*', "", lines[end])
            depth += code.count("{") - code.count("}")
            opened = opened or "{" in code
            if opened and depth <= 0:
                break
            if not opened and code.rstrip().endswith(";"):
                break
        if opened:
            found.append((match.group(1), attr + 2, end + 1, is_test))
    return found


def package_of(path):
    """The cargo package that holds `path` (nearest Cargo.toml's `name`)."""
    directory = os.path.dirname(path)
    while True:
        manifest = os.path.join(directory, "Cargo.toml")
        if os.path.exists(manifest):
            with open(manifest, encoding="utf-8") as toml:
                match = re.search(r'^\[package\][^\[]*?^name\s*=\s*"([^"]+)"', toml.read(), re.M | re.S)
            if match:
                return match.group(1)
        if not directory:
            return None
        directory = os.path.dirname(directory)


def in_test_module(lines, number):
    """Whether line `number` sits below a `mod tests` of its file."""
    return any(re.match(r"^\s*mod tests\b", text) for text in lines[: number - 1])


def main():
    base = sys.argv[1]
    out = set()
    cases_changed_fns, cases_direct = set(), set()
    for path, touched in sorted(changed_lines(base).items()):
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as source:
            lines = source.read().splitlines()
        fns = functions(lines)
        package = package_of(path)
        test_file = "/tests/" in f"/{path}"
        for number in sorted(touched):
            enclosing = [f for f in fns if f[1] <= number <= f[2]]
            inner = min(enclosing, key=lambda f: f[2] - f[1]) if enclosing else None
            if inner and inner[3]:
                out.add(f"test {package} {inner[0]}")
            elif test_file or in_test_module(lines, number):
                for name, _, _, is_test in fns:
                    if is_test:
                        out.add(f"test {package} {name}")
            elif path.startswith("conformance/src/cases/"):
                if inner:
                    cases_changed_fns.add((path, inner[0]))
                else:
                    # Inside a `Case { .. }` literal: the nearest `id:` at or above it.
                    for above in range(number - 1, max(number - 40, -1), -1):
                        match = CASE_ID.match(lines[above]) if above < len(lines) else None
                        if match:
                            cases_direct.add(match.group(1))
                            break
            elif path.split("/")[0] in COLUMNS:
                out.add(f"column {COLUMNS[path.split('/')[0]]}")
            elif path.startswith(SHARED):
                out.add(f"every-column {path}")
    if cases_changed_fns:
        cases_direct |= cases_reaching(cases_changed_fns)
    out |= {f"case {case}" for case in cases_direct}
    print("\n".join(sorted(out)))


def cases_reaching(changed):
    """The ids of the cases whose `run` reaches one of the `changed` functions, each a
    (file, name). A function is reached from a body in its own file, or in a file that
    names its module (`pause::holder` or a `use` of `pause`): names alone (`holder`,
    `run`) repeat across the cases."""
    sources, bodies, runs = {}, [], []
    for root, _, files in os.walk("conformance/src/cases"):
        for file in files:
            if not file.endswith(".rs"):
                continue
            path = os.path.join(root, file)
            with open(path, encoding="utf-8") as source:
                sources[path] = source.read()
            lines = sources[path].splitlines()
            for name, first, last, _ in functions(lines):
                bodies.append((path, name, "\n".join(lines[first:last])))
            case = None
            for text in lines:
                match = CASE_ID.match(text)
                if match:
                    case = match.group(1)
                elif case and re.match(r"^\s*run:", text):
                    runs.append((path, case, text))

    def calls(path, text, target):
        file, name = target
        stem = os.path.basename(os.path.dirname(file)) if file.endswith("mod.rs") else os.path.basename(file)[:-3]
        return bool(re.search(rf"\b{re.escape(name)}\s*[(:<]", text)) and (
            os.path.samefile(path, file) or re.search(rf"\b{re.escape(stem)}\b", sources[path])
        )

    reached = set(changed)
    grew = True
    while grew:
        grew = False
        for path, name, text in bodies:
            if (path, name) not in reached and any(calls(path, text, target) for target in reached):
                reached.add((path, name))
                grew = True
    return {case for path, case, text in runs if any(calls(path, text, target) for target in reached)}


if __name__ == "__main__":
    main()
