//! The aarch64 cross build (scripts/cross-build) answering under
//! qemu-aarch64 against a real mosquitto with SmolLM2, for the plain
//! armv8-a build and the Pi 5 build with the dot-product kernels.
//!
//! scripts/test builds both and passes their paths in
//! SWARM_LLM_AARCH64_BIN and SWARM_LLM_AARCH64_DOTPROD_BIN. Without them
//! these tests fail, unless SWARM_LLM_SKIP_AARCH64=1 says to skip them.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use swarm_llm::mqtt::PublishProps;

/// The aarch64 loader and libraries of Debian's cross toolchain. They are
/// named explicitly rather than with `qemu -L`: with -L the loader may come
/// from the sysroot and libc from an arm64 multiarch package on the host, and
/// such a mixed pair hangs at the first thread.
const LOADER: &str = "/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1";
const LIBRARIES: &str = "/usr/aarch64-linux-gnu/lib";

fn cross_binary(var: &str) -> Option<String> {
    if std::env::var("SWARM_LLM_SKIP_AARCH64").as_deref() == Ok("1") {
        eprintln!("SWARM_LLM_SKIP_AARCH64=1: skipped");
        return None;
    }
    let path = std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run scripts/test (it cross-builds), or set SWARM_LLM_SKIP_AARCH64=1"
        )
    });
    let out = Command::new("file").arg("-L").arg(&path).output().unwrap();
    let kind = String::from_utf8_lossy(&out.stdout);
    assert!(
        kind.contains("ELF 64-bit") && kind.contains("ARM aarch64"),
        "{kind}"
    );
    Some(path)
}

/// How many dot-product (`sdot`/`udot`) instructions the binary holds.
fn dot_product_instructions(path: &str) -> usize {
    let out = Command::new("aarch64-linux-gnu-objdump")
        .args(["-d", "--no-show-raw-insn", path])
        .output()
        .expect("aarch64-linux-gnu-objdump (binutils-aarch64-linux-gnu)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            let mut words = l.split_whitespace().skip(1);
            matches!(words.next(), Some("sdot" | "udot"))
        })
        .count()
}

/// Starts the binary under qemu with `cpu` and asks it one question.
async fn answers_under_qemu(binary: &str, cpu: &str, node: &str) {
    let broker = Broker::start();
    // One llama.cpp thread: with more, OpenMP's spinning workers crawl under
    // emulation.
    let config = service_config(&broker, node);
    let command = [
        "qemu-aarch64-static",
        "-cpu",
        cpu,
        LOADER,
        "--library-path",
        LIBRARIES,
        binary,
    ];
    let service = Service::start_command(&broker, &config, &command).await;
    let mut client = TestClient::replies(&broker).await;
    // Emulated, the safety reading and the prompt take about a minute
    // each: more than the default deadline when both tests share the cores.
    client
        .publish(
            "swarm/query/qemu",
            br#"{"question": "What is the capital city of Australia", "deadline_ms": 400000}"#,
            PublishProps::default(),
        )
        .await;
    let reply = client.reply(Duration::from_secs(420)).await;
    assert!(says_canberra(&reply), "{reply}\n{}", service.log());
    eprintln!(
        "{cpu}: answered in {} ms, {} tokens",
        reply["latency_ms"], reply["tokens"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plain_armv8_build_answers_on_a_cortex_a53() {
    let Some(binary) = cross_binary("SWARM_LLM_AARCH64_BIN") else {
        return;
    };
    assert_eq!(dot_product_instructions(&binary), 0, "armv8-a has no sdot");
    answers_under_qemu(&binary, "cortex-a53", "qemu-a53").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pi5_build_uses_dot_product_kernels_and_answers_on_a_cortex_a76() {
    let Some(binary) = cross_binary("SWARM_LLM_AARCH64_DOTPROD_BIN") else {
        return;
    };
    let dots = dot_product_instructions(&binary);
    assert!(
        dots > 100,
        "only {dots} sdot/udot instructions: the ARM level did not reach llama.cpp"
    );
    answers_under_qemu(&binary, "cortex-a76", "qemu-a76").await;
}
