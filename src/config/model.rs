//! One `[[models]]` entry of the config: the GGUF file and how llama.cpp
//! runs it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Validator;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Short name used in replies, logs and routing.
    pub name: String,
    /// GGUF file; a relative path is taken from the config file's folder.
    pub path: PathBuf,
    #[serde(default = "default_threads")]
    pub threads: u32,
    #[serde(default = "default_context_size")]
    pub context_size: u32,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Prompt tokens processed per llama.cpp step (micro-batch). llama.cpp
    /// reserves its compute buffer for this many tokens' logits, so it bounds
    /// memory (about vocabulary x 4 bytes per token); prompts longer than it
    /// are processed in several steps.
    #[serde(default = "default_batch_tokens")]
    pub batch_tokens: u32,
    /// Questions this model decodes together (continuous batching), each as
    /// its own sequence sharing the context's `context_size` cells. 1 (the
    /// default) answers one at a time; more pays where a step costs little
    /// more for several tokens than for one (a GPU, or more cores than
    /// threads), as llama-server's `--parallel`.
    #[serde(default = "default_parallel")]
    pub parallel: u32,
    /// Element type of the KV cache: `q8_0` (default; half the memory of
    /// `f16` at a negligible cost in quality) or `f16`.
    #[serde(default)]
    pub kv_cache: KvCache,
    /// Map the model file instead of reading it into memory. Off by default:
    /// reading avoids a second copy of the tensors llama.cpp repacks for its
    /// CPU kernels, and a board without swap never re-reads weights from flash
    /// under memory pressure. On where several processes share one model file.
    #[serde(default)]
    pub mmap: bool,
    /// Layers offloaded to the GPU (needs the `cuda` build); 0 keeps it on the CPU.
    #[serde(default)]
    pub gpu_layers: u32,
    /// Prompt for models whose file has no chat template (or a better one):
    /// `{system}` and `{question}` are replaced. Without it the file's chat
    /// template is used.
    #[serde(default)]
    pub prompt_template: Option<String>,
    /// Generation also stops when the answer contains one of these strings
    /// (e.g. "\n" for a few-shot completion prompt); the stop string is cut off.
    #[serde(default)]
    pub stop: Vec<String>,
    /// 0 means greedy decoding (deterministic, the default).
    #[serde(default)]
    pub temperature: f32,
    /// Jobs waiting for this model's thread.
    #[serde(default = "default_queue_depth")]
    pub queue_depth: usize,
    /// How much this model's votes count in a swarm vote (times its confidence).
    #[serde(default = "default_vote_weight")]
    pub vote_weight: f32,
    /// The model's letter prior on multiple-choice questions, A first: its
    /// mean distribution over the option letters, measured on recorded
    /// answers by `swarm-llm calibrate --learn`. Divided out of each answer's
    /// letter distribution. Unset: measured at load on a content-free question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub letter_prior: Option<Vec<f32>>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KvCache {
    F16,
    #[default]
    Q8_0,
}

impl KvCache {
    /// Its name in the config, which is also the cache type llama.cpp's own
    /// tools take (`-ctk`, `-ctv`), so benchmarks run them with the same cache.
    pub fn as_str(self) -> &'static str {
        match self {
            KvCache::F16 => "f16",
            KvCache::Q8_0 => "q8_0",
        }
    }
}

pub(super) fn default_vote_weight() -> f32 {
    1.0
}

pub(super) fn default_threads() -> u32 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as u32)
}
pub(super) fn default_context_size() -> u32 {
    1024
}
pub(super) fn default_max_tokens() -> u32 {
    128
}
pub(super) fn default_batch_tokens() -> u32 {
    128
}
pub(super) fn default_parallel() -> u32 {
    1
}
pub(super) fn default_queue_depth() -> usize {
    8
}

impl ModelConfig {
    pub(super) fn validate(&self, key: &str, v: &mut Validator) {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            v.add(
                format!("{key}.name"),
                "must be non-empty and use only letters, digits, '-', '_' and '.'",
            );
        }
        v.file_exists(&format!("{key}.path"), &self.path);
        if !(1..=256).contains(&self.threads) {
            v.add(format!("{key}.threads"), "must be between 1 and 256");
        }
        if !(128..=131_072).contains(&self.context_size) {
            v.add(
                format!("{key}.context_size"),
                "must be between 128 and 131072",
            );
        }
        if self.max_tokens == 0 || self.max_tokens >= self.context_size {
            v.add(
                format!("{key}.max_tokens"),
                "must be above 0 and below context_size",
            );
        }
        if !(16..=self.context_size).contains(&self.batch_tokens) {
            v.add(
                format!("{key}.batch_tokens"),
                "must be between 16 and context_size",
            );
        }
        if !(1..=64).contains(&self.parallel) {
            v.add(format!("{key}.parallel"), "must be between 1 and 64");
        }
        if let Some(t) = &self.prompt_template {
            if let Err(e) = crate::prompt::validate_template(t) {
                v.add(format!("{key}.prompt_template"), e);
            }
        }
        if self.stop.iter().any(String::is_empty) {
            v.add(format!("{key}.stop"), "stop strings must not be empty");
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            v.add(format!("{key}.temperature"), "must be between 0 and 2");
        }
        if self.queue_depth == 0 {
            v.add(format!("{key}.queue_depth"), "must be above 0");
        }
        if !(0.0..=10.0).contains(&self.vote_weight) {
            v.add(format!("{key}.vote_weight"), "must be between 0 and 10");
        }
        if let Some(prior) = &self.letter_prior {
            let total: f32 = prior.iter().sum();
            if !(2..=crate::route::choice::LETTERS.len()).contains(&prior.len())
                || prior.iter().any(|p| !(p.is_finite() && *p > 0.0))
                || (total - 1.0).abs() > 0.01
            {
                v.add(
                    format!("{key}.letter_prior"),
                    "must be 2 to 5 positive shares (A first) that add up to 1",
                );
            }
        }
    }
}
