//! Service-path benchmark: for each of the three small models at the same
//! thread count, time to first token and decode tokens/s measured through the
//! real service (a question published to mosquitto, the reply read back),
//! next to llama.cpp's own `llama-bench` on the same file, threads and prompt
//! length, as ratios (decode after as many cells as the prompt has, since
//! an answer attends to its prompt: llama-bench's `-d`; its plain tg test
//! from an empty context is printed beside), and next to llama.cpp's decode
//! loop run in this process through the same library build and context
//! settings as the service (what llama-bench's tg test does: one token per
//! `decode`, no sampling), which parts the service's own cost from the difference
//! between llama.cpp versions (llama-bench is built from llama-cpp-python's
//! sources, the service links llama-cpp-sys-2's); the MQTT-in to MQTT-out
//! time beyond inference; and the service's resident memory with all three
//! models loaded.
//!
//! Run it with `scripts/bench` (which fetches the models and builds
//! llama-bench), or directly: `SWARM_LLM_LLAMA_BENCH=path/to/llama-bench
//! cargo bench --bench service`; `cargo bench --bench service -- memory`
//! measures the memory alone (no llama-bench needed). Settings: SWARM_LLM_BENCH_THREADS (default 2),
//! SWARM_LLM_BENCH_RUNS (default 10), SWARM_LLM_BENCH_TOKENS (default 64).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use swarm_llm::config::{Config, ModelConfig, MqttProtocol};
use swarm_llm::inference;
use swarm_llm::measuring::stats::percentile;
use swarm_llm::mqtt::PublishProps;

/// A question whose honest answer is long, so every run decodes the full budget.
const QUESTION: &str = "Count from 1 to 200, writing every number, separated by commas.";
/// Few-shot completion prompt for the Gemma base model (no chat template in its file).
const GEMMA_TEMPLATE: &str = "Answer each question.\n\nQuestion: What does CPU stand for?\nAnswer: central processing unit\n\nQuestion: {question}\nAnswer:";

struct Stats {
    mean: f64,
    p50: f64,
    p95: f64,
    min: f64,
    max: f64,
}

fn stats(mut xs: Vec<f64>) -> Stats {
    xs.sort_by(f64::total_cmp);
    // Interpolated: the median of an even count is the mean of the middle two.
    let q = |p: f64| percentile(&xs, p).expect("at least one value");
    Stats {
        mean: xs.iter().sum::<f64>() / xs.len() as f64,
        p50: q(0.5),
        p95: q(0.95),
        min: xs[0],
        max: xs[xs.len() - 1],
    }
}

fn model_config(name: &str, threads: u32) -> ModelConfig {
    let base = Config::example().models[0].clone();
    let (file, template) = match name {
        "gemma3" => ("gemma3", Some(GEMMA_TEMPLATE.to_string())),
        other => (other, None),
    };
    ModelConfig {
        name: name.into(),
        path: model_path(file),
        threads,
        max_tokens: 256,
        prompt_template: template,
        ..base
    }
}

/// llama.cpp's decode loop in this process, through the library the
/// service links and with its context settings.
struct SameLibraryLoop<'m> {
    ctx: llama_cpp_2::context::LlamaContext<'m>,
    batch: llama_cpp_2::llama_batch::LlamaBatch<'static>,
}

fn load_model(m: &ModelConfig) -> llama_cpp_2::model::LlamaModel {
    let params = inference::model_params(m);
    llama_cpp_2::model::LlamaModel::load_from_file(inference::backend(), &m.path, &params).unwrap()
}

impl<'m> SameLibraryLoop<'m> {
    fn new(model: &'m llama_cpp_2::model::LlamaModel, m: &ModelConfig) -> Self {
        let params = inference::context_params(m);
        Self {
            ctx: model.new_context(inference::backend(), params).unwrap(),
            batch: llama_cpp_2::llama_batch::LlamaBatch::new(1, 1),
        }
    }

    /// Tokens/s decoding `gen` tokens one `decode` each after `depth` cells
    /// of context, as llama-bench's tg test at that depth does (any tokens;
    /// their logits are computed and not read).
    fn decode_tokens_per_s(&mut self, depth: u32, gen: u32) -> f64 {
        use llama_cpp_2::token::LlamaToken;
        let token = |pos: i32| LlamaToken::new(1 + pos * 37);
        self.ctx.clear_kv_cache();
        if depth > 0 {
            let mut context = llama_cpp_2::llama_batch::LlamaBatch::new(depth as usize, 1);
            for pos in 0..depth as i32 {
                context.add(token(pos), pos, &[0], false).unwrap();
            }
            self.ctx.decode(&mut context).unwrap();
        }
        let started = Instant::now();
        for pos in depth as i32..(depth + gen) as i32 {
            self.batch.clear();
            self.batch.add(token(pos), pos, &[0], true).unwrap();
            self.ctx.decode(&mut self.batch).unwrap();
        }
        gen as f64 / started.elapsed().as_secs_f64()
    }
}

/// One question to the bench's model: the reply and its round trip in ms.
async fn ask(client: &mut TestClient, payload: &[u8]) -> (serde_json::Value, f64) {
    let props = PublishProps {
        response_topic: Some("bench/replies".into()),
        correlation_data: None,
    };
    let sent = Instant::now();
    client.publish("swarm/query/bench", payload, props).await;
    let r = client.reply(Duration::from_secs(300)).await;
    assert!(r["error"].is_null(), "{r}");
    (r, sent.elapsed().as_secs_f64() * 1000.0)
}

/// llama-bench's figures for one model: tokens/s.
struct Reference {
    /// Prompt processing of the question's prompt length, from an empty context.
    prompt: f64,
    /// Generation after the prompt's length of cells (`-d`), as the
    /// service decodes an answer: each token attends to the prompt's cells.
    decode_after_prompt: f64,
    /// Generation from an empty context (llama-bench's plain tg test).
    decode_from_empty: f64,
}

/// llama-bench for prompt processing of `prompt` tokens and generation of
/// `gen` tokens, from an empty context and after `prompt` cells, with the
/// model's threads, KV cache type and mmap setting.
fn llama_bench(bin: &str, model: &ModelConfig, prompt: u32, gen: u32, runs: u32) -> Reference {
    let kv = model.kv_cache.as_str();
    let out = Command::new(bin)
        .arg("-m")
        .arg(&model.path)
        .args([
            "-t",
            &model.threads.to_string(),
            "-p",
            &prompt.to_string(),
            "-n",
            &gen.to_string(),
            "-d",
            &format!("0,{prompt}"),
        ])
        .args([
            "-ctk",
            kv,
            "-ctv",
            kv,
            "-lm",
            if model.mmap { "mmap" } else { "none" },
        ])
        .args(["-r", &runs.to_string(), "-o", "json"])
        .output()
        .expect("run llama-bench");
    assert!(
        out.status.success(),
        "llama-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("llama-bench JSON");
    let ts = |prompt_test: bool, depth: u32| {
        rows.iter()
            .find(|r| {
                (r["n_prompt"].as_u64().unwrap() > 0) == prompt_test
                    && r["n_depth"].as_u64() == Some(depth as u64)
            })
            .and_then(|r| r["avg_ts"].as_f64())
            .expect("llama-bench row")
    };
    Reference {
        prompt: ts(true, 0),
        decode_after_prompt: ts(false, prompt),
        decode_from_empty: ts(false, 0),
    }
}

#[tokio::main]
async fn main() {
    let threads: u32 = env_or("SWARM_LLM_BENCH_THREADS", 2);
    let broker = Broker::start();
    if std::env::args().skip(1).any(|a| a == "memory") {
        print_memory(&broker, threads).await;
        return;
    }
    let llama_bench_bin = std::env::var("SWARM_LLM_LLAMA_BENCH")
        .expect("set SWARM_LLM_LLAMA_BENCH to llama-bench (scripts/bench does it)");
    let runs: u32 = env_or("SWARM_LLM_BENCH_RUNS", 10);
    let gen: u32 = env_or("SWARM_LLM_BENCH_TOKENS", 64);
    println!("threads={threads} runs={runs} generated tokens={gen}; ratios are swarm-llm / llama-bench speed (1.00 = equal)\n");
    println!(
        "{:<8} {:>6} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6} | {:>13}",
        "model",
        "prompt",
        "TTFT ms",
        "llama.cpp",
        "ratio",
        "decode t/s",
        "llama.cpp",
        "ratio",
        "MQTT ms p50/95"
    );

    for name in ["smollm2", "gemma3", "qwen05"] {
        let mut config = service_config(&broker, &format!("bench-{name}"));
        config.models = vec![model_config(name, threads)];
        // This measures the answering path against llama-bench; the safety
        // reading before it has its own benchmark (scripts/bench-safety),
        // and it flags this instruction-like question (prompt_injection,
        // p = 0.78 with the shipped head) so no model would answer it.
        config.safety.learned.enabled = false;
        let service = Service::start(&broker, &config).await;
        let mut client = TestClient::connect(&broker, MqttProtocol::V5).await;
        client.subscribe("bench/replies").await;
        let payload =
            serde_json::to_vec(&serde_json::json!({ "question": QUESTION, "max_tokens": gen }))
                .unwrap();

        // The service, llama-bench and the same-library loop take turns, a
        // round each time (two answers, then one llama-bench repetition and
        // one loop), so that the machine's drift over the minutes of a run
        // falls on every side of a ratio alike; a ratio reported is the
        // median of the rounds' ratios.
        let loop_model = load_model(&config.models[0]);
        let mut same_library = SameLibraryLoop::new(&loop_model, &config.models[0]);
        // Warm-up: first touch of the weights on both sides, and the prompt's length.
        let (r, _) = ask(&mut client, &payload).await;
        let prompt_tokens = r["prompt_tokens"].as_u64().unwrap() as u32;
        same_library.decode_tokens_per_s(prompt_tokens, gen);
        let per_round = 2;
        let rounds = runs.div_ceil(per_round).max(1);
        let (mut ttft, mut decode, mut overhead, mut short) = (vec![], vec![], vec![], 0);
        let (mut ref_pp, mut ref_tg, mut ratios) = (vec![], vec![], vec![]);
        let (mut from_empty_ratios, mut same_library_ratios) = (vec![], vec![]);
        for _ in 0..rounds {
            let mut round = vec![];
            for _ in 0..per_round {
                let (r, rtt_ms) = ask(&mut client, &payload).await;
                let t = &r["timing"];
                let (prompt_ms, decode_ms) = (
                    t["prompt_ms"].as_f64().unwrap(),
                    t["decode_ms"].as_f64().unwrap(),
                );
                let tokens = r["tokens"].as_f64().unwrap();
                if tokens < gen as f64 {
                    short += 1;
                }
                ttft.push(prompt_ms);
                round.push((tokens - 1.0) / (decode_ms / 1000.0));
                overhead.push(rtt_ms - prompt_ms - decode_ms);
            }
            let reference = llama_bench(&llama_bench_bin, &config.models[0], prompt_tokens, gen, 1);
            let round_mean = round.iter().sum::<f64>() / round.len() as f64;
            ratios.push(round_mean / reference.decode_after_prompt);
            from_empty_ratios.push(round_mean / reference.decode_from_empty);
            let same_library_ts = same_library.decode_tokens_per_s(prompt_tokens, gen);
            same_library_ratios.push(round_mean / same_library_ts);
            decode.extend(round);
            ref_pp.push(reference.prompt);
            ref_tg.push(reference.decode_after_prompt);
        }
        drop(service);
        drop(same_library);
        drop(loop_model);

        let ref_ttft = prompt_tokens as f64 / stats(ref_pp).mean * 1000.0;
        let (ttft, decode, overhead, ratio, ref_tg) = (
            stats(ttft),
            stats(decode),
            stats(overhead),
            stats(ratios),
            stats(ref_tg),
        );
        println!(
            "{:<8} {:>6} | {:>9.1} {:>9.1} {:>6.2} | {:>10.1} {:>9.1} {:>6.2} | {:>6.2}/{:<6.2}",
            name,
            prompt_tokens,
            ttft.p50,
            ref_ttft,
            ref_ttft / ttft.p50,
            decode.mean,
            ref_tg.mean,
            ratio.p50,
            overhead.p50,
            overhead.p95
        );
        println!(
            "         decode ratio over {rounds} rounds, against llama-bench's tg after {prompt_tokens} cells (-d {prompt_tokens}): median {:.2}, {:.2} to {:.2}",
            ratio.p50, ratio.min, ratio.max
        );
        let from_empty = stats(from_empty_ratios);
        println!(
            "         against llama-bench's tg from an empty context (-d 0, less work a token): median {:.2}, {:.2} to {:.2}",
            from_empty.p50, from_empty.min, from_empty.max
        );
        let same = stats(same_library_ratios);
        println!(
            "         against llama.cpp's decode loop in the library the service links, after {prompt_tokens} cells: median {:.2}, {:.2} to {:.2}",
            same.p50, same.min, same.max
        );
        if short > 0 {
            println!("         ({short} of {} answers ended before {gen} tokens; decode t/s counts the tokens made)", rounds * per_round);
        }
    }

    print_memory(&broker, threads).await;
}

/// Resident memory with all three models loaded, against their file sizes:
/// the answering path alone, then as shipped, with the learned harm check
/// (a context of its own on the SmolLM2 model already loaded), each in a
/// fresh service.
async fn print_memory(broker: &Broker, threads: u32) {
    let (files_mib, answering) = resident_mib(broker, threads, false).await;
    let (_, shipped) = resident_mib(broker, threads, true).await;
    println!(
        "\nresident memory, three models loaded (context {} each; model files {files_mib:.0} MiB):",
        model_config("smollm2", threads).context_size,
    );
    println!(
        "  answering path: {answering:.0} MiB, excess {:.0} MiB (target <= 150)",
        answering - files_mib
    );
    println!(
        "  with the learned harm check, as shipped: {shipped:.0} MiB, the check {:.0} MiB more (target <= 30)",
        shipped - answering
    );
}

/// The model files' size and the resident memory of a service with all
/// three models loaded, after one question, in MiB.
async fn resident_mib(broker: &Broker, threads: u32, learned_safety: bool) -> (f64, f64) {
    let mut config = service_config(broker, "bench-all");
    config.models = ["smollm2", "gemma3", "qwen05"]
        .iter()
        .map(|n| model_config(n, threads))
        .collect();
    config.safety.learned.enabled = learned_safety;
    let files_mib: f64 = config
        .models
        .iter()
        .map(|m| std::fs::metadata(&m.path).unwrap().len() as f64)
        .sum::<f64>()
        / 1048576.0;
    let service = Service::start(broker, &config).await;
    let mut client = TestClient::connect(broker, MqttProtocol::V5).await;
    client.subscribe("swarm/reply/#").await;
    // One question to the answering model so its buffers are touched, as in service.
    client
        .publish(
            "swarm/query/mem",
            b"What is the capital city of Australia",
            PublishProps::default(),
        )
        .await;
    client.reply(Duration::from_secs(120)).await;
    let rss = rss_kib(service.pid()) as f64 / 1024.0;
    (files_mib, rss)
}
