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
