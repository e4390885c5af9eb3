//! The learned safety check's encoder: the model reads a question inside its
//! chat prompt and the hidden states of two middle layers come back.
//!
//! Why middle layers: a linear probe separates harmful requests from their
//! benign lookalikes at least as well there as at the last layer, and
//! llama.cpp stops computing once the deeper one is done, so the check costs a
//! fraction of a full read. llama-cpp-2 does not expose the graph callback
//! that reads a layer, so this module speaks to llama.cpp's C API directly,
//! with a context of its own on the model the answering worker has loaded:
//! the weights are not loaded twice (a second load, which the default
//! `mmap = false` reads into memory, cost 117 MiB with SmolLM2).

use std::ffi::{c_void, CStr, CString};
use std::marker::PhantomData;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_sys_2 as sys;

/// The layers read, as shares of the model's depth (0 is the input, 1 the
/// last layer). Chosen on held-out safety questions (docs/safety.md): the
/// two together separate harmful requests from their lookalikes better than
/// either alone, and the lower one costs nothing, being computed on the way.
pub const LAYER_SHARES: &[f32] = &[0.5, 0.67];

/// The layers read in a model `depth` layers deep. Not the last one: there
/// llama.cpp keeps only the rows of the tokens whose output is asked for.
pub fn layers_read(depth: i32) -> Vec<i32> {
    let mut layers: Vec<i32> = LAYER_SHARES
        .iter()
        .map(|s| ((depth as f32 * s).round() as i32 - 1).clamp(0, (depth - 2).max(0)))
        .collect();
    layers.dedup();
    layers
}

/// How each layer's states are pooled over the question: their mean, the
/// state at the end of the prompt, and their per-feature maximum.
pub const POOLS: usize = 3;

/// The width of the encoder's embeddings for a model `width` wide and
/// `depth` deep: [`POOLS`] poolings of each layer read.
pub fn embedding_size(width: usize, depth: i32) -> usize {
    POOLS * width * layers_read(depth).len()
}

/// What the graph callback keeps of one decode: each chosen layer's output,
/// one row of `width` values per token of the batch.
struct Capture {
    names: Vec<CString>,
    width: usize,
    rows: Vec<Vec<f32>>,
}

/// llama.cpp's graph callback. Asked first whether a tensor's data is
/// wanted (only the chosen layer's output is), then given it; returning
/// false then stops the graph, so the layers above are never computed.
unsafe extern "C" fn on_tensor(t: *mut sys::ggml_tensor, ask: bool, user: *mut c_void) -> bool {
    // SAFETY: llama.cpp passes back the pointer given at context creation,
    // to a Capture the Encoder owns for the context's whole life, and a
    // valid tensor.
    let capture = unsafe { &mut *(user as *mut Capture) };
    let name = unsafe { CStr::from_ptr(sys::ggml_get_name(t)) };
    let Some(i) = capture.names.iter().position(|n| n.as_c_str() == name) else {
        return !ask; // not wanted; and never stop on another tensor
    };
    if ask {
        return true;
    }
    let bytes = unsafe { sys::ggml_nbytes(t) };
    let (width, rows) = unsafe { ((*t).ne[0] as usize, (*t).ne[1] as usize) };
    if width != capture.width || bytes != width * rows * 4 {
        return false; // not the layout read below: `encode` finds no rows
    }
    let out = &mut capture.rows[i];
    out.resize(width * rows, 0.0);
    // SAFETY: the destination holds exactly `bytes`; this works for host and
    // device buffers alike.
    unsafe { sys::ggml_backend_tensor_get(t, out.as_mut_ptr().cast(), 0, bytes) };
    i + 1 < capture.names.len() // the deepest layer read: stop there
}

/// The raw handle of a model loaded through llama-cpp-2, which keeps it
/// private. Sound for the version pinned in Cargo.toml: `LlamaModel` and the
/// pointer it wraps are both `#[repr(transparent)]` over `NonNull<llama_model>`;
/// the assertion below stops the build if its size changes, and
/// [`Encoder::open`] checks the handle against the model's own answers.
fn raw_model(model: &LlamaModel) -> *mut sys::llama_model {
    const _: () =
        assert!(std::mem::size_of::<LlamaModel>() == std::mem::size_of::<*mut sys::llama_model>());
    // SAFETY: see above: the reference points at the model's one pointer.
    unsafe { *(model as *const LlamaModel).cast::<*mut sys::llama_model>() }
}

/// The encoder: a small context of its own on a loaded model, whose graph
/// stops at the chosen layer. It borrows the model, which outlives it.
pub struct Encoder<'m> {
    ctx: *mut sys::llama_context,
    capture: Box<Capture>,
    prefix: Vec<LlamaToken>,
    suffix: Vec<LlamaToken>,
    /// Whether the prompt's head is in the cache (read on the first job).
    primed: bool,
    model: PhantomData<&'m LlamaModel>,
}

// SAFETY: the context is used by the one thread that owns the encoder at a
// time, and the model it reads is `Sync` (llama.cpp's weights are read-only
// once loaded; each context has its own caches and buffers).
unsafe impl Send for Encoder<'_> {}

impl Drop for Encoder<'_> {
    fn drop(&mut self) {
        // SAFETY: created in `open` and freed once; the model is not ours.
        unsafe { sys::llama_free(self.ctx) };
    }
}

/// The options `open` needs.
pub struct EncoderOptions {
    pub threads: i32,
    /// Most question tokens read at once.
    pub question_tokens: usize,
}

impl<'m> Encoder<'m> {
    /// Builds the encoder's context on `model`; `prefix` and `suffix` are
    /// the reading prompt's tokens around the question. Call it on the thread
    /// that loaded the model, before any other thread makes a context on it:
    /// llama.cpp's context creation is not safe to run alongside another.
    pub fn open(
        model: &'m LlamaModel,
        o: &EncoderOptions,
        prefix: Vec<LlamaToken>,
        suffix: Vec<LlamaToken>,
    ) -> Result<Self, String> {
        let raw = raw_model(model);
        // SAFETY: plain C calls on the loaded model, checked below to be the
        // one llama-cpp-2 holds; the context returned is checked for null and
        // owned by the Encoder from then on.
        unsafe {
            let depth = sys::llama_model_n_layer(raw);
            if depth != model.n_layer() as i32
                || sys::llama_model_n_embd(raw) != model.n_embd()
                || sys::llama_model_n_params(raw) != model.n_params()
            {
                return Err("the model's handle does not match the model loaded".into());
            }
            let layers = layers_read(depth);
            let width = model.n_embd().max(0) as usize;
            let mut capture = Box::new(Capture {
                names: layers
                    .iter()
                    .map(|l| CString::new(format!("l_out-{l}")).expect("no NUL"))
                    .collect(),
                width,
                rows: vec![Vec::new(); layers.len()],
            });
            let n_ctx = (prefix.len() + o.question_tokens + suffix.len()) as u32;
            let mut cp = sys::llama_context_default_params();
            cp.n_ctx = n_ctx;
            cp.n_batch = n_ctx;
            cp.n_ubatch = n_ctx;
            cp.n_seq_max = 1;
            cp.n_threads = o.threads;
            cp.n_threads_batch = o.threads;
            cp.cb_eval = Some(on_tensor);
            cp.cb_eval_user_data = (&mut *capture as *mut Capture).cast();
            let ctx = sys::llama_init_from_model(raw, cp);
            if ctx.is_null() {
                return Err("llama.cpp could not create the encoder's context".into());
            }
            Ok(Self {
                ctx,
                capture,
                prefix,
                suffix,
                primed: false,
                model: PhantomData,
            })
        }
    }

    /// Per layer read, the mean of its states over the question's tokens,
    /// then its state at the end of the prompt, where the model is about to
    /// answer (in a causal model only that one has read the whole question),
    /// then the maximum of each feature over the question's tokens (a few
    /// words that carry the harm, in a long or wrapped question, are not
    /// averaged away). `question` is already cut to the context's room.
    pub fn encode(&mut self, question: &[LlamaToken]) -> Result<Vec<f32>, String> {
        if question.is_empty() {
            return Err("nothing to read: the text has no tokens".into());
        }
        // Keep the prompt's head, read once; forget the last question.
        let keep = if self.primed { self.prefix.len() } else { 0 };
        self.primed = false; // until the head is known to be in the cache
        if self.keep_cells(keep) < self.prefix.len() {
            let mut head = self.prefix.clone();
            self.decode(&mut head)?;
        }
        self.primed = true;
        let mut tokens: Vec<LlamaToken> = question.iter().chain(&self.suffix).copied().collect();
        self.decode(&mut tokens)?;
        let w = self.capture.width;
        let n = question.len();
        let mut features = Vec::with_capacity(POOLS * w * self.capture.rows.len());
        for rows in &self.capture.rows {
            if rows.len() != w * tokens.len() {
                return Err("llama.cpp did not return the layer's states".into());
            }
            let mut mean = vec![0.0f32; w];
            let mut max = vec![f32::MIN; w];
            for row in rows.chunks_exact(w).take(n) {
                for ((m, x), v) in mean.iter_mut().zip(&mut max).zip(row) {
                    *m += v;
                    *x = x.max(*v);
                }
            }
            let inverse = 1.0 / n as f32;
            mean.iter_mut().for_each(|m| *m *= inverse);
            features.extend_from_slice(&mean);
            features.extend_from_slice(&rows[rows.len() - w..]);
            features.extend_from_slice(&max);
        }
        Ok(features)
    }

    fn decode(&mut self, tokens: &mut [LlamaToken]) -> Result<(), String> {
        self.capture.rows.iter_mut().for_each(Vec::clear);
        // SAFETY: the batch views `tokens`, which outlives the call; the
        // positions follow the cells already in the cache.
        let status = unsafe {
            let batch = sys::llama_batch_get_one(tokens.as_mut_ptr().cast(), tokens.len() as i32);
            sys::llama_decode(self.ctx, batch)
        };
        if status != 0 {
            return Err(format!("llama_decode failed with {status}"));
        }
        Ok(())
    }

    /// Forgets the cells from position `keep` on and returns how many
    /// leading cells are left: `keep`, or 0 where they are not all there.
    fn keep_cells(&mut self, keep: usize) -> usize {
        // SAFETY: the context is valid for the encoder's life.
        unsafe {
            let mem = sys::llama_get_memory(self.ctx);
            if keep > 0
                && sys::llama_memory_seq_rm(mem, 0, keep as i32, -1)
                && sys::llama_memory_seq_pos_min(mem, 0) == 0
            {
                return keep;
            }
            sys::llama_memory_clear(mem, true);
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_read_is_in_the_middle_and_never_the_last() {
        // SmolLM2-135M has 30 layers: the 15th and the 20th (indices 14, 19) are read.
        assert_eq!(layers_read(30), vec![14, 19]);
        for depth in 1..64 {
            let layers = layers_read(depth);
            assert!(!layers.is_empty());
            assert!(
                layers
                    .iter()
                    .all(|&l| l >= 0 && (depth < 2 || l < depth - 1)),
                "{depth}: {layers:?}"
            );
            assert_eq!(embedding_size(576, depth), POOLS * 576 * layers.len());
        }
    }
}
