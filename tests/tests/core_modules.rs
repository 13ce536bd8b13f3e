//! The top-level modules of `ringkv-core` must form an acyclic graph: each module can then be read,
//! tested and moved knowing only the modules below it, and the vocabulary modules (`id`, `bucket`,
//! `storage`, `request`, `version`) stay usable by every other one without dragging the node in.
//!
//! The graph is read from the sources: a module is a file of `core/src` or a folder with its
//! `mod.rs` (the folder's files count as that module), and an edge is a `crate::x` path (in `use`
//! lines, grouped `use crate::{x::A, y::B}`, and paths in code) outside comments and outside
//! `#[cfg(test)]` items (a module's tests may use anything). Cross-module paths in core are written
//! `crate::...`; `super::` only reaches within a module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// `text` without comments (line, doc and nested block comments) and without the contents of
/// string and char literals, which could otherwise hold `//` or `crate::`.
fn strip_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&chars, i) {
            // A raw string r"..." or r#"..."#: skip to the quote followed by as many hashes.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|h| chars.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A char literal ('x', '\n', '"') or a lifetime ('a).
            if next == Some('\\') {
                let mut j = i + 2;
                while j < chars.len() && chars[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// `code` (already without comments) without the items marked `#[cfg(test)]`.
fn strip_test_items(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let brace = after.find('{');
        let semi = after.find(';');
        let end = match (brace, semi) {
            (Some(b), Some(s)) if s < b => s + 1,
            (None, Some(s)) => s + 1,
            (Some(b), _) => {
                let mut depth = 0usize;
                let mut end = after.len();
                for (k, ch) in after[b..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, None) => after.len(),
        };
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn ident_prefix(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first path segments after every `crate::` in `code` (both `crate::x::Y` and the groups
/// of `crate::{x::Y, z}`).
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if matches!(before, Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let after = code[at + "crate::".len()..].trim_start();
        if let Some(group) = after.strip_prefix('{') {
            // Split the group at its top-level commas and take each entry's first segment.
            let mut depth = 0usize;
            let mut entry_start = true;
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => entry_start = true,
                    c if entry_start && !c.is_whitespace() => {
                        entry_start = false;
                        let name = ident_prefix(&group[k..]);
                        if !name.is_empty() {
                            found.insert(name.to_string());
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident_prefix(after);
            if !name.is_empty() {
                found.insert(name.to_string());
            }
        }
    }
    found
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// Files of modules declared out of line under `#[cfg(test)]` (`#[cfg(test)] mod tests;`): a
/// module's tests, which may use anything, like its inline `#[cfg(test)]` items.
fn test_module_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut test_files = BTreeSet::new();
    for file in files {
        let code = strip_comments_and_strings(&std::fs::read_to_string(file).unwrap());
        // Where the file's child modules live: beside it for `mod.rs` and `lib.rs`, else in the
        // folder named after it.
        let stem = file.file_stem().unwrap().to_str().unwrap();
        let parent = file.parent().unwrap();
        let children = if stem == "mod" || stem == "lib" {
            parent.to_path_buf()
        } else {
            parent.join(stem)
        };
        let mut rest = code.as_str();
        while let Some(at) = rest.find("#[cfg(test)]") {
            rest = &rest[at + "#[cfg(test)]".len()..];
            let item = rest.trim_start();
            let Some(declaration) = item.strip_prefix("mod ") else {
                continue;
            };
            let name = ident_prefix(declaration.trim_start());
            if declaration.trim_start()[name.len()..]
                .trim_start()
                .starts_with(';')
            {
                let file = children.join(format!("{name}.rs"));
                if files.contains(&file) {
                    test_files.insert(file);
                }
                let folder = children.join(name);
                test_files.extend(files.iter().filter(|f| f.starts_with(&folder)).cloned());
            }
        }
    }
    test_files
}

/// The top-level module graph of the crate whose sources are in `src`.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let test_files = test_module_files(&files);
    files.retain(|f| !test_files.contains(f));
    let module_of = |path: &Path| -> Option<String> {
        let relative = path.strip_prefix(src).unwrap();
        let first = relative
            .components()
            .next()?
            .as_os_str()
            .to_str()?
            .to_string();
        let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
        (name != "lib" && name != "main").then_some(name)
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for file in &files {
        let Some(from) = module_of(file) else {
            continue;
        };
        let code = strip_test_items(&strip_comments_and_strings(
            &std::fs::read_to_string(file).unwrap(),
        ));
        for to in crate_references(&code) {
            if to != from && modules.contains(&to) {
                graph.get_mut(&from).unwrap().insert(to);
            }
        }
    }
    graph
}

/// Every cycle of the graph, one per strongly connected component of more than one module (or a
/// module that names itself), each as the path `a -> b -> ... -> a`.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    // Tarjan's strongly connected components, iteratively deep enough for any crate.
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        on_stack: BTreeSet<&'g str>,
        stack: Vec<&'g str>,
        components: Vec<Vec<&'g str>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.components.push(component);
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        on_stack: BTreeSet::new(),
        stack: Vec::new(),
        components: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    let mut found = Vec::new();
    for component in state.components {
        let members: BTreeSet<&str> = component.iter().copied().collect();
        let start = *members.iter().next().unwrap();
        let self_loop = graph[start].contains(start);
        if members.len() == 1 && !self_loop {
            continue;
        }
        found.push(cycle_through(graph, &members, start));
    }
    found
}

/// A shortest cycle from `start` back to itself inside `members` (breadth-first).
fn cycle_through(graph: &Graph, members: &BTreeSet<&str>, start: &str) -> Vec<String> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in &graph[v] {
            let w = w.as_str();
            if !members.contains(w) {
                continue;
            }
            if w == start {
                // Walk back from `v` to `start`, then read the walk forwards and close it.
                let mut cycle = vec![start.to_string()];
                let mut at = v;
                while at != start {
                    cycle.push(at.to_string());
                    at = parent[at];
                }
                cycle[1..].reverse();
                cycle.push(start.to_string());
                return cycle;
            }
            if !parent.contains_key(w) && w != start {
                parent.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    unreachable!("{start} is in a strongly connected component, so a cycle returns to it")
}

fn graph_of(edges: &[(&str, &str)]) -> Graph {
    let mut graph = Graph::new();
    for (from, to) in edges {
        graph
            .entry(from.to_string())
            .or_default()
            .insert(to.to_string());
        graph.entry(to.to_string()).or_default();
    }
    graph
}

#[test]
fn core_top_level_modules_have_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/src");
    let graph = module_graph(&src);
    // The parser must be seeing the real graph, or an empty one would pass.
    assert!(graph.len() > 10, "too few modules found: {graph:?}");
    assert!(graph["node"].contains("coordinator"), "{graph:?}");
    assert!(graph["sim"].contains("checker"), "{graph:?}");
    assert!(graph["id"].is_empty(), "id is a leaf: {:?}", graph["id"]);
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "import cycles between core's modules:\n{}\n(full graph: {graph:#?})",
        found
            .iter()
            .map(|c| c.join(" -> "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn leaf_modules_import_nothing_of_the_crate_but_leaves() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/src");
    let graph = module_graph(&src);
    // id and version are true leaves; bucket, storage, listing and request sit just above them
    // and must not reach up into the node's machinery.
    let allowed: &[(&str, &[&str])] = &[
        ("id", &[]),
        ("version", &[]),
        ("bucket", &["id", "version"]),
        ("storage", &["id", "ring"]),
        // A listing's cursor names a partition (ring) and is framed as contexts are (version).
        ("listing", &["ring", "version"]),
        ("request", &["bucket", "error", "id", "listing", "version"]),
    ];
    for (module, may_use) in allowed {
        let extra: Vec<&String> = graph[*module]
            .iter()
            .filter(|m| !may_use.contains(&m.as_str()))
            .collect();
        assert!(extra.is_empty(), "{module} imports {extra:?}");
    }
}

#[test]
fn the_cycle_finder_finds_and_names_cycles() {
    let acyclic = graph_of(&[("a", "b"), ("b", "c"), ("a", "c")]);
    assert!(cycles(&acyclic).is_empty());

    let two = graph_of(&[("io", "wire"), ("wire", "io"), ("io", "id")]);
    assert_eq!(cycles(&two), vec![vec!["io", "wire", "io"]]);

    let three = graph_of(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]);
    assert_eq!(cycles(&three), vec![vec!["a", "b", "c", "a"]]);

    let self_loop = graph_of(&[("a", "a")]);
    assert_eq!(cycles(&self_loop), vec![vec!["a", "a"]]);

    let separate = graph_of(&[("a", "b"), ("b", "a"), ("c", "d"), ("d", "c"), ("b", "c")]);
    let mut found = cycles(&separate);
    found.sort();
    assert_eq!(found, vec![vec!["a", "b", "a"], vec!["c", "d", "c"]]);
}

#[test]
fn the_parser_reads_paths_groups_and_skips_comments_strings_and_tests() {
    let code = r#"
        //! Uses [`crate::doc_only`].
        use crate::id::NodeId;
        use crate::{bucket::BucketProps, request::{ClientRequest, Reply}, version};
        /* crate::block_comment */
        const S: &str = "crate::in_string // not a comment";
        const C: char = '"';
        fn f(x: crate::ring::Ring) -> crate::error::RequestError { unreachable!() }
        macro_rules! m { () => { $crate::macro_path } }
        #[cfg(test)]
        mod tests {
            use crate::sim::Sim;
        }
        fn g() -> crate::storage::StorageKey { unreachable!() }
    "#;
    let stripped = strip_test_items(&strip_comments_and_strings(code));
    let found: Vec<String> = crate_references(&stripped).into_iter().collect();
    assert_eq!(
        found,
        ["bucket", "error", "id", "request", "ring", "storage", "version"]
    );
}

#[test]
fn a_module_graph_with_a_cycle_fails_the_check() {
    // A crate on disk whose `a` and `b` import each other, with `c/` a folder module.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "pub mod a; pub mod b; pub mod c;").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::B; pub struct A;").unwrap();
    std::fs::write(src.join("b.rs"), "pub struct B(crate::c::C);").unwrap();
    std::fs::create_dir(src.join("c")).unwrap();
    std::fs::write(src.join("c/mod.rs"), "mod inner; pub use inner::C;").unwrap();
    std::fs::write(
        src.join("c/inner.rs"),
        "pub struct C(Box<crate::a::A>); use super::C as _Same;",
    )
    .unwrap();
    let graph = module_graph(src);
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c", "a"]]);
}

#[test]
fn out_of_line_test_modules_are_tests_too() {
    // `a/tests.rs` and `b/tests/` are `#[cfg(test)] mod tests;` of `a` and `b`: their imports of
    // `b` and `a` are no edges, so there is no cycle; `c.rs`'s plain `mod d;` still counts.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "pub mod a; pub mod b; pub mod c;").unwrap();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("a/mod.rs"), "#[cfg(test)]\nmod tests;").unwrap();
    std::fs::write(src.join("a/tests.rs"), "use crate::b::B;").unwrap();
    std::fs::write(
        src.join("b.rs"),
        "pub struct B(crate::a::A);\n#[cfg(test)] mod tests;",
    )
    .unwrap();
    std::fs::create_dir_all(src.join("b/tests")).unwrap();
    std::fs::write(src.join("b/tests/mod.rs"), "mod more;").unwrap();
    std::fs::write(src.join("b/tests/more.rs"), "use crate::a::A;").unwrap();
    std::fs::write(src.join("c.rs"), "mod d;").unwrap();
    std::fs::create_dir_all(src.join("c")).unwrap();
    std::fs::write(src.join("c/d.rs"), "use crate::b::B;").unwrap();
    let graph = module_graph(src);
    assert!(cycles(&graph).is_empty(), "{graph:?}");
    assert!(graph["b"].contains("a"));
    assert!(!graph["a"].contains("b"));
    assert!(graph["c"].contains("b"));
}
