//! Names the commit the binary is built from, for `swarm_build_info` and
//! `--version`: `SWARM_LLM_COMMIT` when the builder sets it (a Yocto recipe
//! builds from its SRCREV), else `git rev-parse`, else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SWARM_LLM_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::env::var("SWARM_LLM_COMMIT").ok().or_else(|| {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    println!(
        "cargo:rustc-env=SWARM_LLM_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
}
