//! The model thread: loads its model, keeps one context for its life and
//! serves jobs with continuous batching (see the module docs of
//! [`crate::inference`]); the encoder thread beside it for the safety check.

use super::letters::{letter_distribution, letter_tokens, LetterBias};
use super::*;
use std::num::NonZeroU32;

use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;
use rand::{Rng, SeedableRng};

use super::slots::{Slots, Verdict};
use crate::config::KvCache;
use crate::prompt;
use crate::route::choice;

/// How a model thread loads its model (also read by the decode benchmark,
/// which runs llama.cpp's own loop with the service's settings).
pub fn model_params(config: &ModelConfig) -> LlamaModelParams {
    LlamaModelParams::default()
        .with_n_gpu_layers(config.gpu_layers)
        .with_use_mmap(config.mmap)
}

/// The context a model thread answers in (also read by the decode benchmark).
pub fn context_params(config: &ModelConfig) -> LlamaContextParams {
    let threads = config.threads as i32;
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(config.context_size))
        .with_n_batch(config.context_size)
        .with_n_ubatch(config.batch_tokens)
        .with_type_k(kv_type(config.kv_cache))
        .with_type_v(kv_type(config.kv_cache))
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        // One pool of cells for all sequences: a question takes what it needs.
        .with_n_seq_max(config.parallel)
        .with_kv_unified(true)
}

fn kv_type(kv: KvCache) -> KvCacheType {
    match kv {
        KvCache::F16 => KvCacheType::F16,
        KvCache::Q8_0 => KvCacheType::Q8_0,
    }
}

struct Worker<'m> {
    config: ModelConfig,
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    /// The prompt's template text before and after the question, tokenized
    /// once at load: only the question changes from one job to the next.
    prefix: Vec<LlamaToken>,
    suffix: Vec<LlamaToken>,
    batch: LlamaBatch<'static>,
    /// Seeds each question's own sampler.
    rng: rand::rngs::StdRng,
    /// The slot (llama.cpp sequence) of each question in flight and the
    /// cells each slot holds, its cached prompt included.
    slots: Slots,
    /// The questions in flight, decoded together one step at a time.
    active: Vec<Sequence>,
    /// A job taken from the queue that has not started: it waits for a
    /// slot, for cells, or for the letter bias.
    waiting: Option<Pending>,
    /// Per option letter, the tokens that spell it ("C" and " C").
    letters: Vec<Vec<LlamaToken>>,
    bias: LetterBias,
}

/// A job read once, before it starts: its prompt, its answer's length
/// limit and the options it offers.
struct Pending {
    job: Job,
    /// It reads the content-free question for the letter bias: its answer
    /// goes to the worker, not to an asker.
    reads_bias: bool,
    prompt: Vec<LlamaToken>,
    limit: usize,
    /// Options the question offers (0: none).
    offered: usize,
}

/// A question in flight: its slot and what it has produced so far.
struct Sequence {
    asked: Pending,
    /// Its slot, which is also its llama.cpp sequence id.
    slot: usize,
    /// Leading prompt tokens whose cells the slot already held: its first
    /// step reads only the rest.
    reused: usize,
    started: Instant,
    first_token_at: Option<Instant>,
    /// The tokens chosen so far; the cells hold all but the last.
    chosen: Vec<LlamaToken>,
    bytes: Vec<u8>,
    probs: Vec<f32>,
    entropies: Vec<f32>,
    options: Option<Vec<f32>>,
    /// Where a stop string begins in the text, once one appeared.
    cut: Option<usize>,
    rng: rand::rngs::StdRng,
    /// Its row in the batch just decoded: the logits it chooses from.
    row: i32,
}

pub(super) fn worker_main(
    config: ModelConfig,
    system_prompt: String,
    mut jobs: mpsc::Receiver<Job>,
    encodes: Option<mpsc::Receiver<EncodeJob>>,
    ready: oneshot::Sender<Result<ModelInfo, InferenceError>>,
    health: Arc<WorkerHealth>,
) {
    let load_err = |message: String| InferenceError::Load {
        model: config.name.clone(),
        path: config.path.clone(),
        message,
    };
    let model = match LlamaModel::load_from_file(backend(), &config.path, &model_params(&config)) {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err(load_err(format!("{e} (is it a complete GGUF file?)"))));
            return;
        }
    };
    let threads = config.threads as i32;
    let ctx = match model.new_context(backend(), context_params(&config)) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(load_err(format!("cannot create a context: {e}"))));
            return;
        }
    };
    let (prefix, suffix) = match template_tokens(&config, &system_prompt, &model) {
        Ok(t) => t,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let (reading_prefix, reading_suffix) =
        match template_tokens(&config, SAFETY_READING_PROMPT, &model) {
            Ok(t) => t,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
    let depth = model.n_layer() as i32;
    let encoder_prompt = fingerprint(
        &reading_prefix,
        &reading_suffix,
        &encoder::layers_read(depth),
    );
    // The encoder: a second context on the same model, whose graph stops at
    // the layers read; made here, before the encoder thread starts.
    let encoder = match encodes {
        None => None,
        Some(rx) => {
            let options = encoder::EncoderOptions {
                threads,
                question_tokens: ENCODER_QUESTION_TOKENS,
            };
            match encoder::Encoder::open(&model, &options, reading_prefix, reading_suffix) {
                Ok(e) => Some((e, rx)),
                Err(e) => {
                    let _ = ready.send(Err(load_err(format!("cannot open the encoder: {e}"))));
                    return;
                }
            }
        }
    };
    let info = ModelInfo {
        name: config.name.clone(),
        context: ctx.n_ctx(),
        file_bytes: std::fs::metadata(&config.path).map_or(0, |m| m.len()),
        parameters: model.n_params(),
        embedding_size: encoder::embedding_size(model.n_embd().max(0) as usize, depth),
        encoder_prompt,
        slots: config.parallel as usize,
    };
    // llama.cpp may round the context up; the batch holds at most `context_size`.
    let capacity = (info.context as usize).min(config.context_size as usize);
    let letters = letter_tokens(&model);
    let bias = match config.letter_prior.clone() {
        Some(prior) => LetterBias::Known(Some(prior)),
        None => LetterBias::Unread,
    };
    let mut worker = Worker {
        slots: Slots::new(config.parallel as usize, capacity),
        config,
        model: &model,
        ctx,
        prefix,
        suffix,
        batch: LlamaBatch::new(capacity, 1),
        rng: rand::rngs::StdRng::seed_from_u64(0x5eed),
        active: Vec::new(),
        waiting: None,
        letters,
        bias,
    };
    tracing::info!(model = %info.name, context = info.context, threads, gpu_layers = worker.config.gpu_layers, "model loaded");
    if ready.send(Ok(info)).is_err() {
        return;
    }
    // The encoder borrows the model, so it runs in a scope that ends before
    // the model is freed.
    std::thread::scope(|scope| {
        if let Some((encoder, rx)) = encoder {
            let model = &model;
            let name = worker.config.name.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("enc-{name}"))
                .spawn_scoped(scope, move || encoder_main(name, model, encoder, rx));
            if let Err(e) = spawned {
                tracing::error!(model = %worker.config.name, error = %e, "cannot start the encoder thread");
            }
        }
        worker.run(&mut jobs, &health);
        tracing::debug!(model = %worker.config.name, "worker stopped");
    });
}

fn encoder_main(
    name: String,
    model: &LlamaModel,
    mut encoder: encoder::Encoder<'_>,
    mut jobs: mpsc::Receiver<EncodeJob>,
) {
    while let Some(job) = jobs.blocking_recv() {
        if job.reply.is_closed() {
            continue;
        }
        // Special-token parsing off: the question stays text (see crate::prompt).
        let mut question = model.vocab().tokenize(job.text.as_bytes(), false, false);
        if question.len() > ENCODER_QUESTION_TOKENS {
            let half = ENCODER_QUESTION_TOKENS / 2;
            question.drain(half..question.len() - half);
        }
        let result = encoder
            .encode(&question)
            .map_err(|message| InferenceError::Decode {
                model: name.clone(),
                message,
            });
        let _ = job.reply.send(result);
    }
    tracing::debug!(model = %name, "encoder stopped");
}

/// Forgets the cells of sequence `seq` from position `keep` on and returns
/// how many leading cells are left: `keep`, or 0 where they are not all
/// there (a sliding-window cache drops early cells) and all of the
/// sequence's cells were forgotten.
fn keep_cells(ctx: &mut LlamaContext<'_>, seq: usize, keep: usize) -> Result<usize, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let id = seq as u32;
    if keep > 0
        && ctx
            .clear_kv_cache_seq(Some(id), Some(keep as u32), None)
            .map_err(|x| e(&x))?
        && ctx.kv_cache_seq_pos_min(id as i32) == 0
    {
        return Ok(keep);
    }
    ctx.clear_kv_cache_seq(Some(id), None, None)
        .map_err(|x| e(&x))?;
    Ok(0)
}

/// Forgets all cells of sequence `seq` (an idle slot's cache given up).
fn forget_cells(ctx: &mut LlamaContext<'_>, seq: usize) {
    // Removing a whole sequence cannot fail; the error is for ids past i32.
    let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
}

/// FNV-1a over a prompt's head and tail token ids and the layers read.
pub(super) fn fingerprint(prefix: &[LlamaToken], suffix: &[LlamaToken], layers: &[i32]) -> u64 {
    let ids = prefix
        .iter()
        .map(|t| t.0)
        .chain([-1])
        .chain(suffix.iter().map(|t| t.0))
        .chain([-1])
        .chain(layers.iter().copied());
    crate::text::fnv1a(ids.flat_map(i32::to_le_bytes))
}

/// Renders the model's prompt around the question's place (the file's chat
/// template, or the configured one) and tokenizes the text before and after
/// it, with special tokens parsed.
fn template_tokens(
    config: &ModelConfig,
    system_prompt: &str,
    model: &LlamaModel,
) -> Result<(Vec<LlamaToken>, Vec<LlamaToken>), InferenceError> {
    let err = |message: String| InferenceError::Template {
        model: config.name.clone(),
        message,
    };
    let parts = match &config.prompt_template {
        Some(t) => prompt::from_template(t, system_prompt, ""),
        None => {
            let template = model.chat_template(None).map_err(|e| {
                err(format!(
                    "the file has no usable chat template ({e}); set prompt_template in its config"
                ))
            })?;
            let msgs = [
                LlamaChatMessage::new("system".into(), system_prompt.to_string()),
                LlamaChatMessage::new("user".into(), prompt::SENTINEL.into()),
            ]
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(e.to_string()))?;
            let rendered = model
                .apply_chat_template(&template, &msgs, true)
                .map_err(|e| err(e.to_string()))?;
            prompt::from_rendered_chat(&rendered, "").map_err(err)?
        }
    };
    let vocab = model.vocab();
    let mut prefix = vocab.tokenize(parts.before.as_bytes(), true, true);
    // A template that writes the BOS text itself would give two BOS tokens.
    if prefix.len() >= 2 && prefix[0] == vocab.bos() && prefix[1] == vocab.bos() {
        prefix.remove(0);
    }
    Ok((prefix, vocab.tokenize(parts.after.as_bytes(), false, true)))
}

impl Worker<'_> {
    /// Serves the queue until it is closed and every question in flight is
    /// answered: each turn starts what fits, then decodes one step of every
    /// question in flight together.
    fn run(&mut self, jobs: &mut mpsc::Receiver<Job>, health: &WorkerHealth) {
        while self.admit(jobs, health) {
            if !self.active.is_empty() {
                self.step(health);
            }
        }
    }

    /// Starts the waiting job and then queued ones while they fit; with
    /// nothing in flight, blocks for the next job. False once the queue is
    /// closed and nothing is in flight.
    fn admit(&mut self, jobs: &mut mpsc::Receiver<Job>, health: &WorkerHealth) -> bool {
        loop {
            let next = match self.waiting.take() {
                Some(pending) => pending,
                None => {
                    let job = match self.active.is_empty() {
                        true => match jobs.blocking_recv() {
                            Some(job) => job,
                            None => return false,
                        },
                        false => match jobs.try_recv() {
                            Ok(job) => job,
                            Err(_) => return true,
                        },
                    };
                    self.prepare(job, false)
                }
            };
            if next.job.reply.is_closed() {
                continue; // the asker gave up while the job was queued
            }
            if let Err(pending) = self.start(next, health) {
                self.waiting = Some(pending);
                return true;
            }
        }
    }

    /// Starts a job (Ok also when it was answered at once with an error), or
    /// hands it back to wait. A question that offers options waits for the
    /// letter bias, whose content-free question is started first.
    fn start(&mut self, next: Pending, health: &WorkerHealth) -> Result<(), Pending> {
        if next.offered > 0 {
            match self.bias {
                LetterBias::Known(_) => {}
                LetterBias::Reading => return Err(next),
                LetterBias::Unread => {
                    let (reply, _) = oneshot::channel();
                    let probe = Job {
                        question: choice::CONTENT_FREE_QUESTION.to_string(),
                        max_tokens: Some(8),
                        deadline: Instant::now() + Duration::from_secs(60),
                        cancel: CancellationToken::new(),
                        reply,
                    };
                    match self.begin(self.prepare(probe, true), health) {
                        Ok(true) => self.bias = LetterBias::Reading,
                        Ok(false) => self.bias = LetterBias::Known(None),
                        Err(_) => {} // no room yet: read it once there is
                    }
                    return Err(next);
                }
            }
        }
        self.begin(next, health).map(|_| ())
    }

    /// Reads a job once: its prompt tokens, answer limit and options.
    fn prepare(&self, job: Job, reads_bias: bool) -> Pending {
        let prompt = self.tokenize(&job.question);
        let limit = job
            .max_tokens
            .map_or(self.config.max_tokens, |m| m.min(self.config.max_tokens))
            as usize;
        let offered = choice::options(&job.question).len();
        Pending {
            job,
            reads_bias,
            prompt,
            limit,
            offered,
        }
    }

    /// Gives a job a slot and the cells of its prompt and answer: Ok(true)
    /// when it is in flight, Ok(false) when it was answered with an error,
    /// Err when it must wait for a question in flight to end.
    fn begin(&mut self, next: Pending, health: &WorkerHealth) -> Result<bool, Pending> {
        let model = self.config.name.clone();
        let reads_bias = next.reads_bias;
        let refuse = |job: Job, error: InferenceError| {
            if reads_bias {
                tracing::warn!(model = %model, error = %error, "cannot read the letter bias");
            }
            let _ = job.reply.send(Err(error));
            Ok(false)
        };
        let (prompt, limit) = (&next.prompt, next.limit);
        // Refuse rather than shorten the answer to fit: an answer cut short by
        // a full context would look like a complete one.
        let capacity = self.slots.capacity();
        let overflow = |prompt_tokens| InferenceError::ContextOverflow {
            model: model.clone(),
            prompt_tokens,
            answer_tokens: limit,
            context: capacity as u32,
        };
        if prompt.len() + limit > capacity {
            return refuse(next.job, overflow(prompt.len()));
        }
        // Out of time already (queued too long): do not read the prompt.
        if Instant::now() >= next.job.deadline {
            return refuse(next.job, InferenceError::DeadlineExceeded { generated: 0 });
        }
        let admission = match self.slots.admit(prompt, limit) {
            Verdict::Start(a) => a,
            Verdict::Wait => return Err(next),
            Verdict::TooLong => return refuse(next.job, overflow(prompt.len())),
        };
        for slot in admission.evict {
            forget_cells(&mut self.ctx, slot);
        }
        let reused = match keep_cells(&mut self.ctx, admission.slot, admission.shared) {
            Ok(n) => n,
            Err(message) => {
                self.slots.retire(admission.slot, Vec::new());
                return refuse(
                    next.job,
                    InferenceError::Decode {
                        model: model.clone(),
                        message,
                    },
                );
            }
        };
        health.start_job();
        tracing::debug!(
            model = %self.config.name,
            slot = admission.slot,
            in_flight = self.active.len() + 1,
            prompt_tokens = prompt.len(),
            reused,
            "question started"
        );
        self.active.push(Sequence {
            asked: next,
            slot: admission.slot,
            reused,
            started: Instant::now(),
            first_token_at: None,
            chosen: Vec::new(),
            bytes: Vec::new(),
            probs: Vec::with_capacity(limit),
            entropies: Vec::with_capacity(limit),
            options: None,
            cut: None,
            rng: rand::rngs::StdRng::seed_from_u64(self.rng.random()),
            row: 0,
        });
        Ok(true)
    }

    /// One llama.cpp decode for every question in flight (the unread part of
    /// the prompts just started, the last chosen token of the others), then
    /// each chooses its next token; those done are answered and leave.
    fn step(&mut self, health: &WorkerHealth) {
        self.batch.clear();
        let mut added = Ok(());
        for s in &mut self.active {
            let seq = [s.slot as i32];
            added = match s.chosen.last() {
                None => {
                    let last = s.asked.prompt.len() - 1;
                    (s.reused..s.asked.prompt.len()).try_for_each(|i| {
                        self.batch.add(s.asked.prompt[i], i as i32, &seq, i == last)
                    })
                }
                Some(&token) => {
                    let pos = s.asked.prompt.len() + s.chosen.len() - 1;
                    self.batch.add(token, pos as i32, &seq, true)
                }
            };
            if added.is_err() {
                break;
            }
            s.row = self.batch.n_tokens() - 1;
        }
        let decoded = added
            .map_err(|e| e.to_string())
            .and_then(|()| self.ctx.decode(&mut self.batch).map_err(|e| e.to_string()));
        if let Err(message) = decoded {
            // The cells of every sequence are unknown now: forget them all.
            let _ = self.ctx.clear_kv_cache_seq(None, None, None);
            self.slots.forget_caches();
            for s in std::mem::take(&mut self.active) {
                let error = InferenceError::Decode {
                    model: self.config.name.clone(),
                    message: message.clone(),
                };
                self.retire(s, Err(error), false, health);
            }
            return;
        }
        let model = self.model;
        let vocab = model.vocab();
        let mut i = 0;
        while i < self.active.len() {
            let s = &mut self.active[i];
            let logits = self.ctx.get_logits_ith(s.row);
            match s.choose(logits, &self.config, &self.letters, &vocab, health) {
                None => i += 1,
                Some(outcome) => {
                    let s = self.active.remove(i);
                    self.retire(s, outcome, true, health);
                }
            }
        }
    }

    /// Answers a question that is done and frees its slot. With `keep`, the
    /// slot keeps the cells of the prompt and of the tokens decoded after it
    /// (the next question that shares its head reads only the rest), held
    /// as a cache that any question needing the room takes over.
    fn retire(
        &mut self,
        s: Sequence,
        outcome: Result<Finish, InferenceError>,
        keep: bool,
        health: &WorkerHealth,
    ) {
        let cells = match keep {
            true => {
                let decoded = s.chosen.len().saturating_sub(1);
                [&s.asked.prompt[..], &s.chosen[..decoded]].concat()
            }
            false => Vec::new(),
        };
        self.slots.retire(s.slot, cells);
        health.finish_job(s.started.elapsed());
        let result = outcome.map(|finish| s.generation(&self.config, finish, self.known_bias()));
        if s.asked.reads_bias {
            let bias = match result {
                Ok(g) => {
                    tracing::info!(model = %self.config.name, letter_bias = ?g.options, "letter bias read");
                    g.options
                }
                Err(e) => {
                    tracing::warn!(model = %self.config.name, error = %e, "cannot read the letter bias");
                    None
                }
            };
            self.bias = LetterBias::Known(bias);
        } else {
            let _ = s.asked.job.reply.send(result);
        }
    }

    fn known_bias(&self) -> Option<&[f32]> {
        match &self.bias {
            LetterBias::Known(Some(bias)) => Some(bias),
            _ => None,
        }
    }

    fn tokenize(&self, question: &str) -> Vec<LlamaToken> {
        let mut tokens = self.prefix.clone();
        // Special-token parsing off: the question stays text (see crate::prompt).
        tokens.extend(
            self.model
                .vocab()
                .tokenize(question.as_bytes(), false, false),
        );
        tokens.extend_from_slice(&self.suffix);
        tokens
    }
}

impl Sequence {
    /// Chooses the next token from this step's logits, after the job's
    /// cancellation and deadline; Some when the question is done.
    fn choose(
        &mut self,
        logits: &[f32],
        config: &ModelConfig,
        letters: &[Vec<LlamaToken>],
        vocab: &LlamaVocab,
        health: &WorkerHealth,
    ) -> Option<Result<Finish, InferenceError>> {
        if self.asked.job.cancel.is_cancelled() {
            return Some(Err(InferenceError::Cancelled));
        }
        if Instant::now() >= self.asked.job.deadline {
            return Some(Err(InferenceError::DeadlineExceeded {
                generated: self.probs.len(),
            }));
        }
        let step = sampling::step(logits, config.temperature, &mut self.rng);
        self.first_token_at.get_or_insert_with(Instant::now);
        health.progress();
        self.probs.push(step.prob);
        self.entropies.push(step.entropy);
        let token = LlamaToken::new(step.token as i32);
        self.chosen.push(token);
        let offered = self.asked.offered;
        if offered > 0
            && self.options.is_none()
            && letters[..offered].iter().any(|ts| ts.contains(&token))
        {
            self.options = Some(letter_distribution(logits, letters, offered));
        }
        if vocab.is_eog(token) {
            return Some(Ok(Finish::Eog));
        }
        self.bytes.extend(vocab.token_to_piece(token, false, None));
        if !config.stop.is_empty() {
            if let Some(at) = sampling::stop_at(&String::from_utf8_lossy(&self.bytes), &config.stop)
            {
                self.cut = Some(at);
                return Some(Ok(Finish::Stop));
            }
        }
        (self.probs.len() >= self.asked.limit).then_some(Ok(Finish::MaxTokens))
    }

    /// The answer and what was measured while producing it.
    fn generation(&self, config: &ModelConfig, finish: Finish, bias: Option<&[f32]>) -> Generation {
        let mut text = String::from_utf8_lossy(&self.bytes).into_owned();
        if let Some(at) = self.cut {
            text.truncate(at);
        }
        let mut text = text.trim().to_string();
        let calibrated = self.options.as_ref().map(|o| match bias {
            Some(bias) => choice::calibrate(o, bias),
            None => o.clone(),
        });
        // With a letter prior measured on real questions, the answer is the
        // option that leads once the prior is divided out (calibrate-before-use).
        if config.letter_prior.is_some() {
            if let Some(better) = calibrated
                .as_ref()
                .and_then(|c| choice::calibrated_answer(&self.asked.job.question, &text, c))
            {
                text = better;
            }
        }
        let first = self.first_token_at.unwrap_or(self.started);
        Generation {
            model: config.name.clone(),
            text,
            finish,
            prompt_tokens: self.asked.prompt.len(),
            token_probs: self.probs.clone(),
            token_entropies: self.entropies.clone(),
            options: self.options.clone(),
            calibrated,
            time_to_first_token: first - self.started,
            decode_time: first.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&i| LlamaToken(i)).collect()
    }

    #[test]
    fn a_prompt_fingerprint_tells_where_the_question_goes_and_the_layers_read() {
        let a = fingerprint(&toks(&[1, 2]), &toks(&[3]), &[19]);
        assert_eq!(a, fingerprint(&toks(&[1, 2]), &toks(&[3]), &[19]));
        // The same tokens split differently around the question differ.
        assert_ne!(a, fingerprint(&toks(&[1]), &toks(&[2, 3]), &[19]));
        assert_ne!(a, fingerprint(&toks(&[1, 2]), &toks(&[4]), &[19]));
        // A head trained on another layer's states does not fit.
        assert_ne!(a, fingerprint(&toks(&[1, 2]), &toks(&[3]), &[14]));
    }
}
