//! The shape of `src/server/` that reviews keep asking for: its modules import each other
//! without circles (within each folder too), so each one can be read, tested and changed
//! without the ones that use it.
//!
//! The check reads the `use` paths and qualified paths of each file (its tests left out): a
//! crude reader of Rust, but the code base writes its imports plainly, and a false circle
//! would fail loudly here rather than pass silently.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// The modules directly inside `dir` (files and folders), by name.
fn modules_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .expect("read the folder")
        .filter_map(|entry| {
            let path = entry.expect("an entry").path();
            let name = path.file_stem()?.to_str()?.to_owned();
            let module = path.is_dir() || path.extension().is_some_and(|e| e == "rs");
            (module && name != "mod").then_some(name)
        })
        .collect()
}

/// Every `.rs` file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).expect("read the folder") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The names at the top level of a `{ … }` group: `a::{b, c}, d::e, f` gives a, d, f.
fn group_names(group: &str) -> Vec<String> {
    let (mut names, mut depth, mut current) = (Vec::new(), 0, String::new());
    for ch in group.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                names.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(ch);
    }
    names.push(current);
    names
        .iter()
        .filter_map(|n| {
            let name: String = n
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// The text of the brace group that opens at `open` (the index of its `{`).
fn group_at(text: &str, open: usize) -> &str {
    let mut depth = 0;
    for (i, ch) in text[open..].char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    ""
}

/// The names a file reaches through `prefix` (e.g. `crate::server::`): `prefix::name` and the
/// top-level names of `prefix::{…}`.
fn reached(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(prefix) {
        let start = from + at;
        let before = text[..start].chars().next_back();
        from = start + prefix.len();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &text[from..];
        if rest.starts_with('{') {
            names.extend(group_names(group_at(text, from)));
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// Module → the sibling modules it imports, for the modules directly inside `dir`, whose path
/// from the crate is `crate_path` (e.g. `crate::server::`).
fn imports(dir: &Path, crate_path: &str) -> BTreeMap<String, BTreeSet<String>> {
    let siblings = modules_in(dir);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files_under(dir) {
        let relative = file.strip_prefix(dir).expect("under the folder");
        let parts: Vec<&str> = relative
            .iter()
            .map(|p| p.to_str().expect("UTF-8 path"))
            .collect();
        if parts == ["mod.rs"] {
            continue;
        }
        let module = parts[0].trim_end_matches(".rs").to_owned();
        let source = fs::read_to_string(&file).expect("read the file");
        let text = source.split("#[cfg(test)]").next().unwrap_or_default();
        let mut names = reached(text, crate_path);
        // `super::` reaches this folder from a file at its top or a folder's mod.rs.
        let is_mod = parts.last() == Some(&"mod.rs");
        let supers = match (parts.len(), is_mod) {
            (1, false) | (2, true) => Some("super::"),
            (2, false) | (3, true) => Some("super::super::"),
            _ => None,
        };
        if let Some(prefix) = supers {
            names.extend(reached(text, prefix));
        }
        names.retain(|n| siblings.contains(n) && *n != module);
        graph.entry(module).or_default().extend(names);
    }
    graph
}

/// A circle in `graph`, if there is one, as the modules along it.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_server_modules_import_each_other_without_circles() {
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server");
    let graph = imports(&server, "crate::server::");
    assert!(
        graph["http"].contains("portal") && graph["startup"].contains("http"),
        "the reader sees imports: {graph:?}"
    );
    assert_eq!(circle(&graph), None, "{graph:?}");
    for folder in modules_in(&server) {
        let dir = server.join(&folder);
        if dir.is_dir() {
            let graph = imports(&dir, &format!("crate::server::{folder}::"));
            assert_eq!(circle(&graph), None, "in server/{folder}: {graph:?}");
        }
    }
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(
        circle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        reached(
            "use crate::server::{admin::X, http::{a, b}, y};",
            "crate::server::"
        ),
        ["admin", "http", "y"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    );
}
