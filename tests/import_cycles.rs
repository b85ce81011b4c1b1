//! The module tree reads top-down: no module imports, directly or through others, a
//! module that imports it back. (The compiler allows such cycles; they make a tree
//! that cannot be read or split from the bottom up.)
//!
//! Reads every `.rs` file of tern and of tern-core as text and follows `crate::a::b`
//! and `super::a` paths outside unit-test modules and comments. A module using its own
//! ancestors (a parent's re-exports) is not an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/net/tls/mod.rs` → `["net", "tls"]`; `src/lib.rs` → `[]`.
fn module_of(root: &Path, file: &Path) -> Module {
    let rel = file
        .strip_prefix(root)
        .expect("under root")
        .with_extension("");
    let mut parts: Module = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The source without comments and without the `#[cfg(test)] mod tests` block (unit
/// tests may reach anywhere).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths written after `prefix` (`crate::` or `super::`), as segments.
fn paths_after(code: &str, prefix: &str) -> Vec<Module> {
    code.match_indices(prefix)
        .filter(|(at, _)| {
            !code[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        })
        .map(|(at, _)| {
            let rest = &code[at + prefix.len()..];
            let end = rest
                .find(|c: char| {
                    !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':')
                })
                .unwrap_or(rest.len());
            rest[..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// The longest prefix of `path` that names a module of the crate.
fn resolve(path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|k| path[..k].to_vec())
        .find(|m| modules.contains(m))
}

/// Module → the modules it imports, for the crate whose sources are under `root`.
fn graph(root: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(root, f)).collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        let module = module_of(root, file);
        // `super` of `a/b.rs` and of `a/b/mod.rs` is `a`.
        let parent: Module = module[..module.len().saturating_sub(1)].to_vec();
        let text = code(&fs::read_to_string(file).expect("readable source"));
        let mut deps = BTreeSet::new();
        for path in paths_after(&text, "crate::") {
            deps.extend(resolve(&path, &modules));
        }
        for path in paths_after(&text, "super::") {
            let full: Module = parent.iter().cloned().chain(path).collect();
            deps.extend(resolve(&full, &modules));
        }
        deps.retain(|d: &Module| !module.starts_with(d));
        edges.insert(module, deps);
    }
    edges
}

/// A cycle through the graph, if there is one (depth-first search).
fn find_cycle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        m: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        marks: &mut BTreeMap<Module, Mark>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        marks.insert(m.clone(), Mark::Open);
        stack.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let from = stack.iter().position(|s| s == next).expect("on the stack");
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(next, edges, marks, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(m.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for m in edges.keys() {
        if !marks.contains_key(m)
            && let Some(cycle) = visit(m, edges, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

/// The same graph between top-level modules (`config`, `selftest`, ...): a file of
/// one importing a file of another is an edge between the two.
fn top_level(edges: &BTreeMap<Module, BTreeSet<Module>>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut top: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, deps) in edges {
        let Some(a) = from.first() else { continue };
        let entry = top.entry(vec![a.clone()]).or_default();
        for to in deps {
            if let Some(b) = to.first().filter(|b| *b != a) {
                entry.insert(vec![b.clone()]);
            }
        }
    }
    top
}

/// No cycle between files, nor between top-level modules.
fn assert_acyclic(root: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(root);
    let files = graph(&root);
    assert!(files.len() > 10, "read only {} modules", files.len());
    for (what, edges) in [("files", files.clone()), ("modules", top_level(&files))] {
        if let Some(cycle) = find_cycle(&edges) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            panic!(
                "import cycle between {what} under {}: {}",
                root.display(),
                names.join(" → ")
            );
        }
    }
}

#[test]
fn tern_has_no_import_cycle() {
    assert_acyclic("src");
}

#[test]
fn tern_core_has_no_import_cycle() {
    assert_acyclic("crates/tern-core/src");
}

/// The checker finds a cycle when there is one.
#[test]
fn a_cycle_is_found() {
    let m = |s: &str| vec![s.to_string()];
    let edges = BTreeMap::from([
        (m("a"), BTreeSet::from([m("b")])),
        (m("b"), BTreeSet::from([m("c")])),
        (m("c"), BTreeSet::from([m("a")])),
        (m("d"), BTreeSet::from([m("a")])),
    ]);
    let cycle = find_cycle(&edges).expect("a → b → c → a");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    let acyclic = BTreeMap::from([
        (m("a"), BTreeSet::from([m("b")])),
        (m("b"), BTreeSet::new()),
    ]);
    assert_eq!(find_cycle(&acyclic), None);
}
