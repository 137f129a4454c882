//! The module graph of `src/`, read from the source: which module names which (`use crate::..`,
//! `crate::a::b::f(..)`, `super::..`). Run with `--nocapture` to print it:
//! `cargo test --test api architecture -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`views::routes`) -> source text without `#[cfg(test)]` modules and comments.
fn modules() -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&root).expect("under src/");
            let mut parts: Vec<String> = relative
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let name = parts.join("::");
            if name == "lib" || name == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            found.insert(name, without_tests_and_comments(&text));
        }
    }
    found
}

fn without_tests_and_comments(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a `crate::` or `super::` prefix starts, with `use` trees (`{a, b::{c, d}}`)
/// expanded: `("crate", ["auth", "jwt", "JwtKeys"])`.
fn paths(text: &str) -> Vec<(&'static str, Vec<String>)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &text[at..];
        let anchor = if rest.starts_with("crate::") {
            Some("crate")
        } else if rest.starts_with("super::") {
            Some("super")
        } else {
            None
        };
        let preceded_by_ident =
            at > 0 && is_ident(bytes[at - 1]) || at > 1 && &text[at - 2..at] == "::";
        match anchor {
            Some(anchor) if !preceded_by_ident => {
                let mut pos = at + anchor.len() + 2;
                let mut found = Vec::new();
                tree(text, &mut pos, Vec::new(), &mut found);
                out.extend(found.into_iter().map(|p| (anchor, p)));
                at = pos.max(at + 1);
            }
            _ => at += 1,
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Reads one `use` tree at `pos` (a path, then optionally `::{tree, tree}`), pushing each leaf.
fn tree(text: &str, pos: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let bytes = text.as_bytes();
    let mut path = prefix;
    loop {
        while *pos < bytes.len() && bytes[*pos].is_ascii_whitespace() {
            *pos += 1;
        }
        if *pos < bytes.len() && bytes[*pos] == b'{' {
            *pos += 1;
            loop {
                tree(text, pos, path.clone(), out);
                while *pos < bytes.len()
                    && (bytes[*pos].is_ascii_whitespace() || bytes[*pos] == b',')
                {
                    *pos += 1;
                }
                if *pos >= bytes.len() || bytes[*pos] == b'}' {
                    *pos += 1;
                    return;
                }
            }
        }
        let start = *pos;
        while *pos < bytes.len() && is_ident(bytes[*pos]) {
            *pos += 1;
        }
        if start == *pos {
            out.push(path);
            return;
        }
        let segment = &text[start..*pos];
        if segment != "self" {
            path.push(segment.to_owned());
        }
        if text[*pos..].starts_with("::") {
            *pos += 2;
        } else {
            out.push(path);
            return;
        }
    }
}

/// Module -> the other modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut edges = BTreeMap::new();
    for (name, text) in &modules {
        let mut to = BTreeSet::new();
        let own: Vec<&str> = name.split("::").collect();
        for (anchor, path) in paths(text) {
            let mut full: Vec<String> = match anchor {
                "crate" => Vec::new(),
                // `super` is the parent module, whether the file is `b.rs` or `b/mod.rs`.
                _ => own[..own.len() - 1]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
            };
            full.extend(path);
            let target = (1..=full.len())
                .rev()
                .map(|n| full[..n].join("::"))
                .find(|candidate| modules.contains_key(candidate));
            if let Some(target) = target
                && &target != name
                && !name.starts_with(&format!("{target}::"))
            {
                to.insert(target);
            }
        }
        edges.insert(name.clone(), to);
    }
    edges
}

/// A circle in the graph, if there is one.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let from = path.iter().position(|n| n == node).unwrap_or(0);
                let mut found = path[from..].to_vec();
                found.push(node.to_owned());
                return Some(found);
            }
            _ => {}
        }
        state.insert(node.to_owned(), 1);
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, state, path) {
                return Some(found);
            }
        }
        path.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut state, &mut Vec::new()))
}

/// Modules that speak HTTP (handlers, extractors, middleware, wiring): they sit above every
/// feature's domain code and may call any feature's store.
fn is_http(module: &str) -> bool {
    const FEATURES: &[&str] = &[
        "auth", "tables", "query", "views", "jobs", "channels", "service",
    ];
    module == "app"
        || module == "state"
        || FEATURES.contains(&module)
        || module.ends_with("::routes")
        || module.starts_with("service::")
        || module == "auth::extract"
        || module == "auth::query_token"
        || module == "auth::caller"
}

/// Shared plumbing: imports no feature.
const PLUMBING: &[&str] = &["db", "drain", "error", "config", "telemetry", "secrets"];

/// Clients of the HTTP API that live in the binary (the command-line client): they speak HTTP
/// to a server and name nothing of it, not even plumbing, so they could move to a crate of
/// their own. Only `config`, which declares the binary's commands, names their flags
/// (`cli::args`).
const CLIENTS: &[&str] = &["cli"];

/// The features' domain code from top to bottom: each may name only features below it.
const DOMAIN_ORDER: &[&str] = &["jobs", "views", "query", "tables", "channels", "auth"];

fn feature(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn the_module_graph_has_no_circle_and_features_depend_downward_only() {
    let edges = graph();
    assert!(
        edges.len() > 40,
        "the source was read: {} modules",
        edges.len()
    );
    assert!(
        edges["jobs::scheduler"].contains("views::refresh"),
        "the reader sees `use crate::..` paths: {:?}",
        edges["jobs::scheduler"]
    );
    assert!(
        edges["config"].contains("cli::args") && edges["cli::tables"].contains("cli::client"),
        "the reader sees the client and its flags: {:?}",
        edges["cli::tables"]
    );
    assert!(
        edges["app"].contains("channels::hub") && edges["app"].contains("channels"),
        "the reader expands `use crate::{{..}}` groups: {:?}",
        edges["app"]
    );
    println!("module graph (module -> modules it names):");
    for (module, to) in &edges {
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        println!("  {module} -> {}", to.join(", "));
    }

    assert_eq!(circle(&edges), None, "an import circle between modules");

    let mut problems = Vec::new();
    for (module, to) in &edges {
        for target in to {
            let (from_feature, to_feature) = (feature(module), feature(target));
            if module.ends_with("::routes") && target.ends_with("::routes") {
                problems.push(format!("{module} -> {target}: routes never import routes"));
            }
            if !is_http(module) && is_http(target) {
                problems.push(format!("{module} -> {target}: domain code names HTTP code"));
            }
            let declares_client_flags = module == "config" && target == "cli::args";
            if PLUMBING.contains(&from_feature)
                && !PLUMBING.contains(&to_feature)
                && !declares_client_flags
            {
                problems.push(format!("{module} -> {target}: plumbing names a feature"));
            }
            if CLIENTS.contains(&from_feature) && to_feature != from_feature {
                problems.push(format!("{module} -> {target}: a client names server code"));
            }
            if CLIENTS.contains(&to_feature) && from_feature != to_feature && !declares_client_flags
            {
                problems.push(format!("{module} -> {target}: server code names a client"));
            }
            if !is_http(module) && from_feature != to_feature {
                let rank = |f: &str| DOMAIN_ORDER.iter().position(|d| *d == f);
                if let (Some(from), Some(to)) = (rank(from_feature), rank(to_feature))
                    && to < from
                {
                    problems.push(format!(
                        "{module} -> {target}: a feature names one above it"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");

    let mut features: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (module, to) in edges.iter().filter(|(m, _)| !is_http(m)) {
        for target in to {
            if feature(target) != feature(module) {
                features
                    .entry(feature(module))
                    .or_default()
                    .insert(feature(target));
            }
        }
    }
    println!("feature graph of domain code (HTTP modules left out):");
    for (from, to) in &features {
        println!(
            "  {from} -> {}",
            to.iter().copied().collect::<Vec<_>>().join(", ")
        );
    }
}

#[test]
fn a_planted_circle_is_found() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.insert("a".into(), ["b".to_owned()].into());
    edges.insert("b".into(), ["c".to_owned()].into());
    edges.insert("c".into(), ["a".to_owned()].into());
    assert_eq!(
        circle(&edges),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    edges.get_mut("c").expect("c").clear();
    assert_eq!(circle(&edges), None);
}

#[test]
fn use_trees_are_expanded_to_each_leaf() {
    let found = paths(
        "use crate::auth::{self, jwt::JwtKeys, throttle::{A, B}};\nlet x = super::store::find(1);",
    );
    let found: Vec<String> = found
        .into_iter()
        .map(|(a, p)| format!("{a}::{}", p.join("::")))
        .collect();
    assert_eq!(
        found,
        [
            "crate::auth",
            "crate::auth::jwt::JwtKeys",
            "crate::auth::throttle::A",
            "crate::auth::throttle::B",
            "super::store::find",
        ]
    );
}
