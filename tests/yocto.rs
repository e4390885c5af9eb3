//! The Yocto layer: lint clean with oelint-adv, and its crates include in
//! step with Cargo.lock.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// oelint-adv from $OELINT_ADV, else from the virtual environment
/// scripts/test installs it into, else from PATH.
fn oelint() -> PathBuf {
    if let Some(p) = std::env::var_os("OELINT_ADV") {
        return p.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
    let venv = cache.join("swarm-llm/venv/bin/oelint-adv");
    if venv.exists() {
        venv
    } else {
        "oelint-adv".into()
    }
}

#[test]
fn the_crates_include_matches_cargo_lock() {
    let out = Command::new(repo().join("scripts/yocto-crates"))
        .arg("--check")
        .output()
        .expect("python3 runs scripts/yocto-crates");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_layer_passes_oelint_adv() {
    let layer = repo().join("yocto/meta-swarm-llm");
    let mut recipes: Vec<PathBuf> = Vec::new();
    for group in std::fs::read_dir(&layer).unwrap() {
        let group = group.unwrap().path();
        if !group
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("recipes-")
        {
            continue;
        }
        for recipe_dir in std::fs::read_dir(group).unwrap() {
            for f in std::fs::read_dir(recipe_dir.unwrap().path()).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "bb") {
                    recipes.push(f);
                }
            }
        }
    }
    assert!(recipes.len() >= 3, "recipes found: {recipes:?}");
    let out = Command::new(oelint())
        .current_dir(&layer)
        .args(["--quiet", "--hide", "info", "--release", "scarthgap"])
        .arg("--constantmods")
        .arg(format!(
            "+{}",
            repo().join("yocto/oelint-constants.json").display()
        ))
        // Pings the homepage over the network; there is no public one yet.
        .args(["--suppress", "oelint.vars.homepageping"])
        .args(&recipes)
        .output()
        .expect("oelint-adv is installed (scripts/test installs it)");
    let findings = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "oelint-adv findings:\n{findings}"
    );
}

/// Whether an SPDX expression of a crate (`MIT OR Apache-2.0`,
/// `(MIT OR Apache-2.0) AND Unicode-3.0`, the old `MIT/Apache-2.0`) is met
/// by the licences in `granted`.
fn satisfied(expression: &str, granted: &[&str]) -> bool {
    fn or(tokens: &[String], at: &mut usize, granted: &[&str]) -> bool {
        let mut ok = and(tokens, at, granted);
        while tokens.get(*at).is_some_and(|t| t == "OR") {
            *at += 1;
            ok |= and(tokens, at, granted);
        }
        ok
    }
    fn and(tokens: &[String], at: &mut usize, granted: &[&str]) -> bool {
        let mut ok = term(tokens, at, granted);
        while tokens.get(*at).is_some_and(|t| t == "AND") {
            *at += 1;
            ok &= term(tokens, at, granted);
        }
        ok
    }
    fn term(tokens: &[String], at: &mut usize, granted: &[&str]) -> bool {
        let t = tokens[*at].clone();
        *at += 1;
        if t == "(" {
            let ok = or(tokens, at, granted);
            *at += 1; // ")"
            return ok;
        }
        // `X WITH exception` is granted where X is.
        if tokens.get(*at).is_some_and(|w| w == "WITH") {
            *at += 2;
        }
        granted.contains(&t.as_str())
    }
    let tokens: Vec<String> = expression
        .replace('/', " OR ")
        .replace('(', " ( ")
        .replace(')', " ) ")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    or(&tokens, &mut 0, granted)
}

#[test]
fn spdx_expressions_are_read_as_cargo_writes_them() {
    assert!(satisfied("MIT OR Apache-2.0", &["MIT"]));
    assert!(satisfied("MIT/Apache-2.0", &["Apache-2.0"]));
    assert!(!satisfied("Apache-2.0 AND ISC", &["Apache-2.0"]));
    assert!(satisfied(
        "(MIT OR Apache-2.0) AND Unicode-3.0",
        &["MIT", "Unicode-3.0"]
    ));
    assert!(!satisfied("(MIT OR Apache-2.0) AND Unicode-3.0", &["MIT"]));
    assert!(satisfied(
        "Apache-2.0 WITH LLVM-exception OR MIT",
        &["Apache-2.0"]
    ));
}

/// The recipe's LICENSE covers every crate the firmware build links (as
/// `--no-default-features` for aarch64, what the recipe builds), so an
/// image's licence manifest says what the binary carries.
#[test]
fn the_recipe_licence_covers_every_linked_crate() {
    let recipe = std::fs::read_to_string(
        repo().join("yocto/meta-swarm-llm/recipes-ai/swarm-llm/swarm-llm_0.1.0.bb"),
    )
    .unwrap();
    let line = recipe
        .lines()
        .find_map(|l| l.strip_prefix("LICENSE = "))
        .expect("a LICENSE line");
    let granted: Vec<&str> = line.trim_matches('"').split('&').map(str::trim).collect();
    let out = Command::new(env!("CARGO"))
        .current_dir(repo())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--no-default-features",
        ])
        .args(["--filter-platform", "aarch64-unknown-linux-gnu"])
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let license_of: std::collections::HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap(),
                p["license"].as_str().unwrap_or(""),
            )
        })
        .collect();
    // The crates reachable from swarm-llm through normal dependencies.
    let nodes: std::collections::HashMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let mut todo = vec![meta["resolve"]["root"].as_str().unwrap()];
    let mut linked = std::collections::BTreeSet::new();
    while let Some(id) = todo.pop() {
        if !linked.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            if dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null())
            {
                todo.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    let uncovered: Vec<String> = linked
        .iter()
        .filter(|id| !satisfied(license_of[*id], &granted))
        .map(|id| format!("{id}: {}", license_of[*id]))
        .collect();
    assert!(linked.len() > 100, "{} crates", linked.len());
    assert!(
        uncovered.is_empty(),
        "LICENSE = {line} misses: {uncovered:#?}"
    );
}
