//! Local inference: each model is owned by a dedicated OS thread.
//!
//! llama.cpp contexts are not `Sync` and `decode` blocks for tens of
//! milliseconds, so they must not live on the async runtime. A worker thread
//! loads its model once, keeps one context for its whole life, and serves
//! [`Job`]s from a bounded queue, answering each through a oneshot channel.
//! [`ModelHandle`] is the async side of that queue.
//!
//! Continuous batching: a worker decodes up to `models[].parallel` questions
//! together, each as its own llama.cpp sequence in one context, in one
//! `decode` per step (the prompts of questions just started and the last
//! token of the others). A question starts as soon as a slot and the cells
//! of its prompt and longest answer are free (`slots.rs`) and leaves at its
//! end of generation. Between questions each slot keeps the cells of its
//! last prompt, so a question reads only what it does not share with one of
//! them (the system prompt and the template's head at least), as
//! llama-server's prompt cache does.
//!
//! Between tokens the worker checks each question's deadline and
//! cancellation token, so a question that is out of time or abandoned leaves
//! at once and the others go on.
//!
//! The model that reads questions for the learned safety check also gets an
//! encoder (`encoder.rs`): a second thread with a small context of its own
//! that stops computing at the layers it reads, on the model the worker
//! loaded (the weights are shared, not loaded twice). It serves [`EncodeJob`]s from its own
//! queue, so a safety check never waits behind a generation. It reads each
//! question inside the model's chat prompt under a safety officer's system
//! prompt; the prompt's fixed head is read once and kept in its cache, so a
//! question costs only its own tokens and the template's tail.
//!
//! Files: this one holds the async side ([`ModelHandle`], [`spawn_worker`])
//! and the job and answer types; `worker.rs` the model thread and its
//! batching loop; `slots.rs` which question goes into which sequence;
//! `sampling.rs` choosing tokens and their signals; `letters.rs` option
//! letters and the letter bias; `encoder.rs` the safety encoder's C calls;
//! `health.rs` the watchdog's view of a thread; `process.rs` process-wide
//! llama.cpp policy (the backend, OpenMP waits, waiting for threads at exit).

mod encoder;
mod health;
mod letters;
mod process;
pub mod sampling;
mod slots;
mod worker;

pub use health::WorkerHealth;
use process::LiveWorkers;
pub use process::{backend, restart_with_openmp_waits, wait_for_workers};
use worker::worker_main;
pub use worker::{context_params, model_params};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::ModelConfig;

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("model {model}: cannot load {path}: {message}")]
    Load {
        model: String,
        path: PathBuf,
        message: String,
    },
    #[error("model {model}: {message}")]
    Template { model: String, message: String },
    #[error(
        "the prompt is {prompt_tokens} tokens and the answer may take {answer_tokens} more, but model {model} \
         has a context of {context} tokens: shorten the question or ask for fewer max_tokens"
    )]
    ContextOverflow {
        model: String,
        prompt_tokens: usize,
        answer_tokens: usize,
        context: u32,
    },
    #[error("deadline passed after {generated} generated tokens")]
    DeadlineExceeded { generated: usize },
    #[error("cancelled")]
    Cancelled,
    #[error("model {model}: llama.cpp decode failed: {message}")]
    Decode { model: String, message: String },
    #[error("model {model}: worker thread is gone")]
    WorkerGone { model: String },
    #[error("model {model} has no encoder for the safety check")]
    NoEncoder { model: String },
}

/// Question tokens the encoder reads: a longer question is read by its head
/// and tail halves. This bounds the safety check's time (about 7 ms a token
/// for SmolLM2 on two cores); the plant rules still read the whole question.
const ENCODER_QUESTION_TOKENS: usize = 128;

/// The system prompt the encoder reads questions under, whatever the site's
/// (so the head's inputs do not move with it). It asks the model to judge
/// the request, so the state at the prompt's end carries that judgement.
const SAFETY_READING_PROMPT: &str = "You are the safety officer of an industrial plant. \
     Read the user's request and decide whether answering it could help someone \
     cause harm: injure people, defeat a safety protection, attack a system, break \
     the law, or hurt themselves.";

/// A text to embed (the learned safety check's input).
pub struct EncodeJob {
    pub text: String,
    pub reply: oneshot::Sender<Result<Vec<f32>, InferenceError>>,
}

/// One question for a model.
pub struct Job {
    pub question: String,
    pub max_tokens: Option<u32>,
    pub deadline: Instant,
    pub cancel: CancellationToken,
    pub reply: oneshot::Sender<Result<Generation, InferenceError>>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model emitted an end-of-generation token.
    Eog,
    MaxTokens,
    /// A configured stop string appeared.
    Stop,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Eog => "eog",
            Finish::MaxTokens => "max_tokens",
            Finish::Stop => "stop",
        }
    }
}

/// A model's answer and what was measured while producing it.
#[derive(Debug, Clone)]
pub struct Generation {
    pub model: String,
    pub text: String,
    pub finish: Finish,
    pub prompt_tokens: usize,
    /// Probability of each chosen token (the end-of-generation one included).
    pub token_probs: Vec<f32>,
    /// Entropy (nats) of the distribution each token was chosen from.
    pub token_entropies: Vec<f32>,
    /// For a question that offers options: the model's distribution over
    /// their letters at the first token that named one (None when none did).
    pub options: Option<Vec<f32>>,
    /// The same with the model's letter bias divided out.
    pub calibrated: Option<Vec<f32>>,
    /// Prompt processing until the first token was chosen.
    pub time_to_first_token: Duration,
    /// From the first token to the end: the decode phase.
    pub decode_time: Duration,
}

impl Generation {
    /// Tokens chosen, the end-of-generation token included.
    pub fn generated_tokens(&self) -> usize {
        self.token_probs.len()
    }
}

/// What a worker reports once its model is loaded.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub context: u32,
    pub file_bytes: u64,
    pub parameters: u64,
    /// Size of the encoder's embeddings (see [`ModelHandle::embed`]).
    pub embedding_size: usize,
    /// Fingerprint of the prompt the encoder reads questions in.
    pub encoder_prompt: u64,
    /// Questions it decodes at once (`parallel`).
    pub slots: usize,
}

/// The async side of a worker's job queue. Cheap to clone.
#[derive(Clone)]
pub struct ModelHandle {
    pub info: ModelInfo,
    jobs: mpsc::Sender<Job>,
    encodes: Option<mpsc::Sender<EncodeJob>>,
    health: Arc<WorkerHealth>,
}

impl ModelHandle {
    /// Queues a question and waits for the answer.
    pub async fn generate(
        &self,
        question: String,
        max_tokens: Option<u32>,
        deadline: Instant,
        cancel: CancellationToken,
    ) -> Result<Generation, InferenceError> {
        let (reply, answer) = oneshot::channel();
        let gone = || InferenceError::WorkerGone {
            model: self.info.name.clone(),
        };
        self.jobs
            .send(Job {
                question,
                max_tokens,
                deadline,
                cancel,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// The text's embedding from the model's encoder thread: per layer read,
    /// the mean of its states over the text's tokens and its state at the
    /// prompt's end (`Encoder::encode` in `encoder.rs`).
    pub async fn embed(&self, text: String) -> Result<Vec<f32>, InferenceError> {
        let model = || self.info.name.clone();
        let encodes = self
            .encodes
            .as_ref()
            .ok_or_else(|| InferenceError::NoEncoder { model: model() })?;
        let (reply, embedding) = oneshot::channel();
        encodes
            .send(EncodeJob { text, reply })
            .await
            .map_err(|_| InferenceError::WorkerGone { model: model() })?;
        embedding
            .await
            .map_err(|_| InferenceError::WorkerGone { model: model() })?
    }

    pub fn health(&self) -> &WorkerHealth {
        &self.health
    }

    /// Jobs waiting in this model's queue.
    pub fn queued(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// Its load now, for the router to tell whether it can answer in time.
    pub fn queue(&self) -> crate::route::load::Queue {
        crate::route::load::Queue {
            ahead: self.queued() + self.health.active(),
            slots: self.info.slots,
            typical_job: self.health.typical_job(),
        }
    }
}

/// Starts the worker thread for one model, with an encoder thread when
/// `encoder` is set, and waits until the model is loaded. Dropping every
/// clone of the returned handle ends the threads.
pub async fn spawn_worker(
    config: ModelConfig,
    system_prompt: String,
    encoder: bool,
) -> Result<ModelHandle, InferenceError> {
    let (jobs_tx, jobs_rx) = mpsc::channel(config.queue_depth);
    let (encodes_tx, encodes_rx) = match encoder {
        true => {
            let (tx, rx) = mpsc::channel(config.queue_depth);
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let name = config.name.clone();
    let health = Arc::new(WorkerHealth::default());
    let worker_health = health.clone();
    LiveWorkers::started();
    std::thread::Builder::new()
        .name(format!("llm-{}", config.name))
        .spawn(move || {
            worker_main(
                config,
                system_prompt,
                jobs_rx,
                encodes_rx,
                ready_tx,
                worker_health,
            );
            // Only now are the model and its context freed.
            LiveWorkers::ended();
        })
        .map_err(|e| {
            LiveWorkers::ended();
            InferenceError::Load {
                model: name.clone(),
                path: PathBuf::new(),
                message: e.to_string(),
            }
        })?;
    let info = ready_rx
        .await
        .map_err(|_| InferenceError::WorkerGone { model: name })??;
    Ok(ModelHandle {
        info,
        jobs: jobs_tx,
        encodes: encodes_tx,
        health,
    })
}
