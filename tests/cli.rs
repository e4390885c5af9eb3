//! The command line without a broker: config checking and the default config.

mod common;

use std::process::{Command, Output};

use common::BIN;

/// Writes `text` as a config file (with an empty model file beside it) and runs check-config on it.
fn check_config(text: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.gguf"), b"").unwrap();
    let file = dir.path().join("swarm.toml");
    std::fs::write(&file, text).unwrap();
    Command::new(BIN)
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap()
}

#[test]
fn check_config_reports_every_problem_and_exits_78() {
    let out = check_config(
        "node = \"line 3\"\n[mqtt]\nport = 0\n[limits]\nmax_in_flight = 0\n[[models]]\nname = \"m\"\npath = \"nope.gguf\"\nthreads = 0\n",
    );
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "node:",
        "mqtt.port:",
        "limits.max_in_flight:",
        "models[0].path:",
        "models[0].threads:",
    ] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
}

#[test]
fn check_config_names_an_unknown_key() {
    let out = check_config("node = \"a\"\n[mqtt]\nhots = \"x\"\n");
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `hots`"));
}

#[test]
fn default_config_passes_check_config_once_the_model_exists() {
    let out = Command::new(BIN)
        .arg("print-default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // Thresholds as they are written, not as f32 widened to f64.
    let long_fraction = |l: &str| {
        l.split('.')
            .skip(1)
            .any(|f| f.chars().take_while(char::is_ascii_digit).count() > 6)
    };
    assert!(!text.lines().any(long_fraction), "{text}");
    // Point the example's model at a file that exists; nothing else changes.
    let text = text.replace(
        "/usr/share/swarm-llm/models/SmolLM2-135M-Instruct.Q4_1.gguf",
        "model.gguf",
    );
    let out = check_config(&text);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn missing_config_file_is_a_config_error() {
    let out = Command::new(BIN)
        .args(["check-config", "/nonexistent/swarm.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
}

/// `run` with a config whose only model file is `model`.
fn run_with_model(dir: &std::path::Path, model: &str) -> Output {
    let file = dir.join("swarm.toml");
    std::fs::write(
        &file,
        format!("node = \"n\"\n[[models]]\nname = \"m\"\npath = {model:?}\n"),
    )
    .unwrap();
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(&file)
        .output()
        .unwrap()
}

#[test]
fn a_missing_model_file_is_a_config_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_with_model(dir.path(), "missing.gguf");
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("models[0].path: no such file"));
}

#[test]
fn a_corrupt_model_file_exits_65_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // A GGUF magic followed by garbage, as a truncated download would leave.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    std::fs::write(dir.path().join("corrupt.gguf"), bytes).unwrap();
    let out = run_with_model(dir.path(), "corrupt.gguf");
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model m: cannot load") && err.contains("corrupt.gguf"),
        "{err}"
    );
}

#[test]
fn check_config_refuses_bad_safety_settings_and_names_each() {
    // An unknown harm category is a parse error that names it.
    let out = check_config(
        "node = \"a\"\n[safety.actions]\nrudeness = \"refuse\"\n[[models]]\nname = \"m\"\npath = \"model.gguf\"\n",
    );
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rudeness") && err.contains("self_harm"),
        "{err}"
    );
    // An unknown action likewise.
    let out = check_config(
        "node = \"a\"\n[safety.actions]\nself_harm = \"ignore\"\n[[models]]\nname = \"m\"\npath = \"model.gguf\"\n",
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ignore"));
    // The learned layer's and the cloud judge's keys, all at once.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad-head.json"), b"{\"not\": \"a head\"}").unwrap();
    let out = check_config(&format!(
        "node = \"a\"\n[safety.learned]\nmodel = \"nope\"\nthreshold = 1.5\nhead = {:?}\n\
         [safety.cloud_judge]\nfrom = 0.0\ntimeout_ms = 5\n[[models]]\nname = \"m\"\npath = \"model.gguf\"\n",
        dir.path().join("bad-head.json")
    ));
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "safety.learned.model:",
        "safety.learned.threshold:",
        "safety.learned.head:",
        "safety.cloud_judge.from:",
        "safety.cloud_judge.timeout_ms:",
    ] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
}

/// The built-in harm head was trained on SmolLM2 reading questions in its
/// chat template; the same file under another template gives the head
/// other inputs, so the service refuses to start rather than judge by them.
#[test]
fn the_harm_heads_model_under_another_prompt_template_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("swarm.toml");
    std::fs::write(
        &file,
        format!(
            "node = \"n\"\n[[models]]\nname = \"smollm2\"\npath = {:?}\nprompt_template = \"Q: {{question}}\\nA:\"\n",
            common::test_model()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("reads questions in another prompt template") && err.contains("safety-train"),
        "{err}"
    );
}

#[test]
fn check_config_reads_drop_ins_from_the_environment_and_names_their_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.gguf"), b"").unwrap();
    let file = dir.path().join("swarm.toml");
    std::fs::write(&file, "[[models]]\nname = \"m\"\npath = \"model.gguf\"\n").unwrap();
    let drop_ins = dir.path().join("swarm.toml.d");
    std::fs::create_dir(&drop_ins).unwrap();
    std::fs::write(
        drop_ins.join("10-site.toml"),
        "[mqtt]\nhost = \"broker.plant\"\n",
    )
    .unwrap();
    std::fs::write(drop_ins.join("50-board.toml"), "node = \"press-07\"\n").unwrap();
    // No argument: the file comes from SWARM_LLM_CONFIG.
    let out = Command::new(BIN)
        .arg("check-config")
        .env("SWARM_LLM_CONFIG", &file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("10-site.toml")
            && said.contains("50-board.toml")
            && said.contains("node press-07"),
        "{said}"
    );
    std::fs::write(drop_ins.join("50-board.toml"), "node = \"press 07\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .env("SWARM_LLM_CONFIG", &file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("- node (") && err.contains("50-board.toml):"),
        "{err}"
    );
}

#[test]
fn completions_and_man_pages_come_from_the_command_line_definition() {
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(script.contains("check-config") && script.contains("--deadline-ms"));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["man", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let page = std::fs::read_to_string(dir.path().join("swarm-llm.1")).unwrap();
    assert!(
        page.contains("EX_CONFIG"),
        "the exit codes are in the man page"
    );
    assert!(dir.path().join("swarm-llm-run.1").is_file());
}
