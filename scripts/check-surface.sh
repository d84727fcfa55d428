#!/usr/bin/env bash
# The public surface of the `distsync` facade, read from its rustdoc (run after
# `cargo doc --workspace --no-deps --all-features`, as scripts/test-all.sh does):
#   1. the crate root names at most MAX_ROOT items, modules included: what a user
#      types, every other item in exactly one module;
#   2. no item is reachable at two public paths: rustdoc writes a page for an item at
#      every path it is reachable by, so two pages under target/doc/distsync/ of the same
#      kind and name whose declaration and documentation are the same are one item
#      twice (re-exported items from the workspace's other crates carry no source link
#      to tell them by; every public item is documented, so two distinct items with
#      one name also differ in their docs);
#   3. every rustdoc example a user meets (the facade's pages, and the backend crates'
#      pages, whose items a user reaches through `distsync::store`) names crate paths
#      only as a `distsync` user can import them: no `distsync_core::`, `distsync_kv::`
#      or `distsync_<backend>::`. Each crate's doctests compile those examples against
#      the facade (a dev-dependency), as a user's crate would; the core and kv crates'
#      own pages are the backend author's and may name them.
# Prints what it counted and each failure; exits 1 if there is any, 0 otherwise.
#
#   scripts/check-surface.sh [DOC_DIR]     DOC_DIR defaults to target/doc
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly MAX_ROOT=35
doc=${1:-${CARGO_TARGET_DIR:-target}/doc}
[[ -f $doc/distsync/index.html ]] || {
    echo "check-surface: no rustdoc at $doc/distsync (run cargo doc first)" >&2
    exit 1
}

python3 - "$doc" "$MAX_ROOT" <<'EOF'
import collections, html, os, re, sys

doc, max_root = sys.argv[1], int(sys.argv[2])
root = os.path.join(doc, "distsync")
failures = []

# 1. The root's items: each is a <dt> of an item table, a link to its page or a
# re-export (`pub use a_crate as name;`, which rustdoc lists without a page).
index = open(os.path.join(root, "index.html"), encoding="utf-8").read()
names = [re.sub(r"<[^>]+>", "", name)  # rustdoc breaks long names with <wbr>
         for name in re.findall(r'<dt(?: id="[^"]*")?><a class="[a-z]+" href="[^"]*"[^>]*>(.+?)</a>',
                                index)]
names += re.findall(r'<dt id="reexport\.([A-Za-z0-9_]+)">', index)
roots = sorted(set(html.unescape(name) for name in names))
print(f"check-surface: the root of distsync names {len(roots)} items (at most {max_root}): "
      + ", ".join(roots))
if len(roots) > max_root:
    failures.append(f"the root names {len(roots)} items, more than {max_root}")

# 2. One path per item: two pages of one kind and name with the same declaration and
# documentation are one item at two paths.
pages = collections.defaultdict(list)
page_name = re.compile(r"^(struct|enum|trait|fn|constant|type|macro|union|static|traitalias)"
                       r"\.([A-Za-z0-9_]+)\.html$")
declaration = re.compile(r'<pre class="rust item-decl">(.*?)</pre>', re.S)
top_doc = re.compile(r'<details class="toggle top-doc"[^>]*>(.*?)</details>', re.S)
links = re.compile(r'href="[^"]*"')  # relative to each page: not part of the item
for directory, _, files in os.walk(root):
    for file in files:
        match = page_name.match(file)
        if not match:
            continue
        path = os.path.join(directory, file)
        text = open(path, encoding="utf-8").read()
        if 'http-equiv="refresh"' in text:
            continue  # a redirect page, not a path of its own
        parts = [found.group(1) if found else "" for found in (declaration.search(text),
                                                               top_doc.search(text))]
        identity = (match.group(1), match.group(2), links.sub("", parts[0] + parts[1]))
        module = os.path.relpath(directory, doc).replace(os.sep, "::")
        pages[identity].append(f"{module}::{match.group(2)}")
twice = [paths for paths in pages.values() if len(paths) > 1]
print(f"check-surface: {sum(len(p) for p in pages.values())} item pages, {len(pages)} items")
for paths in sorted(twice):
    failures.append(f"one item at {len(paths)} paths: {', '.join(sorted(paths))}")

# 3. Examples in the paths a user imports.
example = re.compile(r'<pre class="rust rust-example-rendered"><code>(.*?)</code></pre>', re.S)
internal = re.compile(r"\bdistsync_(core|kv|etcd|redis|postgres|zookeeper)::")
user_crates = ["distsync"] + [f"distsync_{b}" for b in ("etcd", "redis", "postgres", "zookeeper")]
examples = 0
for crate in user_crates:
    for directory, _, files in os.walk(os.path.join(doc, crate)):
        for file in sorted(files):
            if not file.endswith(".html"):
                continue
            path = os.path.join(directory, file)
            for code in example.findall(open(path, encoding="utf-8").read()):
                examples += 1
                text = html.unescape(re.sub(r"<[^>]+>", "", code))
                for line in text.splitlines():
                    if internal.search(line):
                        failures.append(f"{os.path.relpath(path, doc)}: an example names a path "
                                        f"a user cannot import: {line.strip()}")
print(f"check-surface: {examples} rendered examples on the pages a user reads")

for failure in failures:
    print(f"check-surface: {failure}")
sys.exit(1 if failures else 0)
EOF
