//! Tidy test: the homeserver's module dependencies point one way (ARCHITECTURE.md, "Layers").
//!
//! In the style of rust-analyzer's tidy tests, this reads the source rather than compiling it:
//! every `use crate::…` / `use super::…` item and every inline `crate::x::…` / `super::x::…`
//! path in `homeserver/src` is resolved to a module, each file and each target is mapped to its
//! layer, and an import into a layer the file's layer may not use fails the test with the file,
//! both layers and what would have been allowed. Comments and `#[cfg(test)]` modules are not
//! read: a unit test may reach anywhere.
//!
//! The allowed directions are written once, in [`LAYERS`] (and described in ARCHITECTURE.md).
//! [`EXCEPTIONS`] lists the violations known today (none); the test also fails when one of
//! them no longer occurs, so the list stays exact and can only shrink.
//!
//! A second test reads the same paths between the domain services (`service/*`, federation
//! aside) and fails on an import cycle among them, naming it: within the layer, too, a module
//! is either below another or above it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers from top to bottom, each with the layers it may import besides itself.
///
/// - `app`: `lib.rs` and `main.rs`, start-up and shutdown; may use everything.
/// - `api`: HTTP handlers of the client, federation and admin listeners (`api/`, `admin/`).
/// - `service::federation`: federation behaviour (receiving transactions, remote joins,
///   invites, knocks, backfill, remote media and directory), built on the domain services.
/// - `service`: the domain services; never federation behaviour.
/// - `transport`: server-to-server mechanism (TLS identity, allow-list, outbound client,
///   connection pool, outbox sender); no Matrix behaviour.
/// - `store`: SQLite; never calls up.
/// - `matrix`: the pure Matrix rules, signing identity included; no I/O, no clock.
/// - `base`: `config`, `error`, `util`, `clock`, used by every layer.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "app",
        &[
            "api",
            "service::federation",
            "service",
            "transport",
            "store",
            "matrix",
            "base",
        ],
    ),
    (
        "api",
        &[
            "service::federation",
            "service",
            "transport",
            "matrix",
            "base",
        ],
    ),
    (
        "service::federation",
        &["service", "transport", "store", "matrix", "base"],
    ),
    ("service", &["transport", "store", "matrix", "base"]),
    ("transport", &["store", "matrix", "base"]),
    ("store", &["matrix", "base"]),
    ("matrix", &["base"]),
    ("base", &["matrix"]),
];

/// Known violations, as (file under `homeserver/src`, imported module path). Each entry must
/// still occur; remove it with the import. None is left: keep it empty. (A domain service that
/// needs to route a request to another unit is wrong; the routing belongs in
/// `service::federation::route`, above both.)
const EXCEPTIONS: &[(&str, &str)] = &[];

/// The layer of a module path (`["service", "rooms"]`); the crate root is `app`.
fn layer_of(module: &[String]) -> &'static str {
    match module.first().map(String::as_str) {
        Some("api" | "admin") => "api",
        Some("service") if module.get(1).map(String::as_str) == Some("federation") => {
            "service::federation"
        }
        Some("service") => "service",
        Some("transport") => "transport",
        Some("store") => "store",
        Some("matrix") => "matrix",
        Some("config" | "error" | "util" | "clock") => "base",
        _ => "app",
    }
}

fn allowed(from: &str, to: &str) -> bool {
    from == to
        || LAYERS
            .iter()
            .find(|(name, _)| *name == from)
            .is_some_and(|(_, below)| below.contains(&to))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path a file defines: `service/federation/mod.rs` → `[service, federation]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The source without comments and without `#[cfg(test)]` items (tests may reach anywhere).
fn code_of(source: &str) -> String {
    let mut out = String::new();
    let mut lines = source.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            // Skip the item that follows: to the end of its braces (or its `;`).
            let mut depth = 0i32;
            let mut opened = false;
            for next in lines.by_ref() {
                for c in next.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                if (opened && depth <= 0) || (!opened && next.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Expands a use tree (`a::{b, c::d as e}`) into its leaf paths.
fn expand_use(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let mut base = prefix.to_vec();
        base.extend(head);
        let inner = &tree[open + 1..tree.rfind('}').expect("balanced use tree")];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_use(&base, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_use(&base, &inner[start..], out);
    } else {
        let path = tree.split(" as ").next().unwrap_or(tree);
        let mut full = prefix.to_vec();
        full.extend(
            path.split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "self" && *s != "*")
                .map(String::from),
        );
        if !full.is_empty() {
            out.push(full);
        }
    }
}

/// Resolves a path starting with `crate`, `super`, `self` or one of `children` (the modules
/// the file declares with `mod`), seen in `module`, to a crate path.
fn resolve(module: &[String], children: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut rest = path;
    let mut base: Vec<String> = match rest.first().map(String::as_str) {
        Some("crate") => {
            rest = &rest[1..];
            Vec::new()
        }
        Some("self") => {
            rest = &rest[1..];
            module.to_vec()
        }
        Some(first) if children.iter().any(|c| c == first) => module.to_vec(),
        Some("super") => {
            let mut base = module.to_vec();
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
            base
        }
        _ => return None,
    };
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The child modules a file declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`), which its
/// code may name without `crate::` or `self::`.
fn child_modules(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub(crate) ")
                .or_else(|| line.strip_prefix("pub "))
                .unwrap_or(line);
            let name = rest.strip_prefix("mod ")?.strip_suffix(';')?.trim();
            Some(name.to_owned())
        })
        .collect()
}

/// Every crate path a file's code names: use items and inline paths that start with `crate::`,
/// `super::`, `self::` or a child module's name.
fn imports(code: &str, module: &[String]) -> BTreeSet<Vec<String>> {
    let children = child_modules(code);
    let starts_with_module = |tree: &str| {
        ["crate", "super", "self"]
            .iter()
            .map(|s| s.to_string())
            .chain(children.iter().cloned())
            .any(|head| {
                tree.strip_prefix(head.as_str())
                    .is_some_and(|after| after.trim_start().starts_with("::"))
            })
    };
    let mut found = BTreeSet::new();
    let mut rest = code;
    // Use items (possibly spanning lines).
    let mut uses = Vec::new();
    let mut outside_uses = String::new();
    while let Some(i) = rest.find("use ") {
        let at_word_start = i == 0
            || !rest[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let item = &rest[i + 4..];
        let end = item.find(';').unwrap_or(item.len());
        let tree = &item[..end];
        if at_word_start && starts_with_module(tree) {
            outside_uses.push_str(&rest[..i]);
            expand_use(&[], tree, &mut uses);
            rest = &item[end..];
        } else {
            outside_uses.push_str(&rest[..i + 4]);
            rest = item;
        }
    }
    outside_uses.push_str(rest);
    for path in uses {
        found.extend(resolve(module, &children, &path));
    }
    // Inline paths.
    let starts: Vec<String> = ["crate", "super", "self"]
        .iter()
        .map(|s| s.to_string())
        .chain(children.iter().cloned())
        .map(|head| format!("{head}::"))
        .collect();
    for start in &starts {
        let mut text = outside_uses.as_str();
        while let Some(i) = text.find(start.as_str()) {
            let before = text[..i].chars().next_back();
            let path_text: String = text[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            text = &text[i + path_text.len().max(1)..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut segments: Vec<String> = path_text
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            // The last segment of an inline path is the item used (a function, a type).
            if segments.len() > 2 {
                segments.pop();
            }
            found.extend(resolve(module, &children, &segments));
        }
    }
    found
}

#[test]
fn module_dependencies_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();

    let mut violations = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("file under src");
        let module = module_of(rel);
        let from = layer_of(&module);
        let source = std::fs::read_to_string(file).expect("read source");
        for target in imports(&code_of(&source), &module) {
            let to = layer_of(&target);
            if !allowed(from, to) {
                let shown = target
                    .iter()
                    .take(2)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("::");
                violations.insert((rel.to_string_lossy().replace('\\', "/"), shown, from, to));
            }
        }
    }

    let mut problems = Vec::new();
    for (file, target, from, to) in &violations {
        if EXCEPTIONS.contains(&(file.as_str(), target.as_str())) {
            continue;
        }
        let below = LAYERS
            .iter()
            .find(|(name, _)| name == from)
            .map(|(_, below)| below.join(", "))
            .unwrap_or_default();
        problems.push(format!(
            "file {file} (layer {from}) imports {target} (layer {to}), allowed: {from}, {below}"
        ));
    }
    for (file, target) in EXCEPTIONS {
        if !violations
            .iter()
            .any(|(f, t, _, _)| f == file && t == target)
        {
            problems.push(format!(
                "exception ({file}, {target}) no longer occurs: remove it from EXCEPTIONS"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} layering problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The domain-service module (`service/<name>.rs` or `service/<name>/`) a module path is in;
/// `None` outside the domain services (and for `service::federation`, a layer of its own).
fn service_module(module: &[String], src: &Path) -> Option<String> {
    if module.first().map(String::as_str) != Some("service") {
        return None;
    }
    let name = module.get(1)?;
    if name == "federation" {
        return None;
    }
    let dir = src.join("service");
    (dir.join(format!("{name}.rs")).is_file() || dir.join(name).is_dir()).then(|| name.clone())
}

#[test]
fn domain_services_form_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();

    let mut edges: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("file under src");
        let module = module_of(rel);
        let Some(from) = service_module(&module, &src) else {
            continue;
        };
        let source = std::fs::read_to_string(file).expect("read source");
        for target in imports(&code_of(&source), &module) {
            if let Some(to) = service_module(&target, &src)
                && to != from
            {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }

    // Depth-first search; a module met again while still on the path closes a cycle.
    fn visit(
        node: &str,
        edges: &std::collections::BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        let mut path = Vec::new();
        if let Some(cycle) = visit(node, &edges, &mut path, &mut done) {
            panic!(
                "the domain services import each other in a cycle: {}",
                cycle.join(" -> ")
            );
        }
    }
}
