//! The KV cells of one model's context, shared by the questions it decodes
//! together (continuous batching, `models[].parallel`).
//!
//! Each question runs as one llama.cpp sequence in a slot. A slot keeps the
//! cells of its last prompt when its question is done (the prompt cache), so
//! a new question goes to the free slot whose cached prompt shares the
//! longest head with its own, and reads only the rest. A question reserves
//! cells for its whole prompt and its longest answer when it starts, so a
//! decode never runs out of cells mid-answer; one that does not fit beside
//! the questions in flight waits for them (idle slots' caches are given up
//! first), and only one longer than the whole context is refused.
//!
//! Pure bookkeeping: the worker does to the llama.cpp context what it decides.

use llama_cpp_2::token::LlamaToken;

/// The slots of one context and the cells each holds.
#[derive(Debug)]
pub struct Slots {
    /// Cells in the context, shared by all slots.
    capacity: usize,
    slots: Vec<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    /// The tokens whose cells the slot's sequence holds, from position 0.
    cached: Vec<LlamaToken>,
    /// Cells reserved by the question in flight in this slot (None: idle).
    reserved: Option<usize>,
}

/// Where a question starts.
#[derive(Debug, PartialEq, Eq)]
pub struct Admission {
    /// Its slot, which is also its llama.cpp sequence id.
    pub slot: usize,
    /// Leading prompt tokens whose cells the slot already holds; the worker
    /// forgets the slot's cells after them (at least the prompt's last token
    /// is read again: its logits start the answer).
    pub shared: usize,
    /// Idle slots whose cells the worker must forget to make room.
    pub evict: Vec<usize>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Start(Admission),
    /// No slot is free or the cells are taken by questions in flight: ask
    /// again when one is done.
    Wait,
    /// Longer than the whole context: it can never start.
    TooLong,
}

impl Slots {
    pub fn new(parallel: usize, capacity: usize) -> Self {
        Self {
            capacity,
            slots: (0..parallel.max(1)).map(|_| Slot::default()).collect(),
        }
    }

    /// Cells in the context, shared by all slots.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Finds a slot for a question whose prompt is `prompt` and whose answer
    /// takes at most `answer_tokens`, and reserves its cells.
    pub fn admit(&mut self, prompt: &[LlamaToken], answer_tokens: usize) -> Verdict {
        let need = prompt.len() + answer_tokens;
        if need > self.capacity {
            return Verdict::TooLong;
        }
        let last = prompt.len().saturating_sub(1);
        // The free slot sharing the longest head; on a tie, the one whose
        // cache is smallest (the least is lost), then the lowest.
        let Some((slot, shared)) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.reserved.is_none())
            .map(|(i, s)| (i, common_prefix(&s.cached, prompt).min(last)))
            .max_by_key(|&(i, shared)| {
                let cached = self.slots[i].cached.len();
                (shared, std::cmp::Reverse(cached), std::cmp::Reverse(i))
            })
        else {
            return Verdict::Wait;
        };
        let mut free = self.capacity
            - self
                .slots
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != slot)
                .map(|(_, s)| s.cells())
                .sum::<usize>();
        // Give up the largest idle caches first: the fewest slots lose theirs.
        let mut idle: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                i != slot && self.slots[i].reserved.is_none() && !self.slots[i].cached.is_empty()
            })
            .collect();
        idle.sort_by_key(|&i| std::cmp::Reverse(self.slots[i].cached.len()));
        let mut evict = Vec::new();
        for i in idle {
            if free >= need {
                break;
            }
            free += self.slots[i].cached.len();
            evict.push(i);
        }
        if free < need {
            return Verdict::Wait;
        }
        for &i in &evict {
            self.slots[i].cached.clear();
        }
        let s = &mut self.slots[slot];
        s.cached.truncate(shared);
        s.reserved = Some(need);
        Verdict::Start(Admission {
            slot,
            shared,
            evict,
        })
    }

    /// The question in `slot` is done; `cached` are the tokens whose cells
    /// its sequence still holds (empty: the worker forgot them).
    pub fn retire(&mut self, slot: usize, cached: Vec<LlamaToken>) {
        let s = &mut self.slots[slot];
        s.reserved = None;
        s.cached = cached;
    }

    /// Forgets every slot's cache (the worker cleared the whole context).
    pub fn forget_caches(&mut self) {
        for s in &mut self.slots {
            s.cached.clear();
        }
    }
}

/// What the tests read.
#[cfg(test)]
impl Slots {
    /// Questions in flight.
    fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.reserved.is_some()).count()
    }

    /// Cells held, reserved or cached.
    fn in_use(&self) -> usize {
        self.slots.iter().map(Slot::cells).sum()
    }
}

impl Slot {
    fn cells(&self) -> usize {
        self.reserved.unwrap_or(self.cached.len())
    }
}

/// How many leading tokens two prompts share.
pub fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn toks(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&i| LlamaToken::new(i)).collect()
    }

    fn start(v: Verdict) -> Admission {
        match v {
            Verdict::Start(a) => a,
            other => panic!("expected a start, got {other:?}"),
        }
    }

    #[test]
    fn prompts_share_their_common_head_only() {
        assert_eq!(common_prefix(&toks(&[1, 2, 3]), &toks(&[1, 2, 4, 5])), 2);
        assert_eq!(common_prefix(&toks(&[]), &toks(&[1])), 0);
        assert_eq!(common_prefix(&toks(&[1, 2]), &toks(&[1, 2, 3])), 2);
    }

    #[test]
    fn a_question_goes_to_the_free_slot_that_shares_the_longest_head() {
        let mut slots = Slots::new(3, 100);
        let a = start(slots.admit(&toks(&[1, 2, 3, 10]), 4));
        let b = start(slots.admit(&toks(&[1, 2, 20]), 4));
        assert_eq!((a.slot, b.slot), (0, 1));
        slots.retire(0, toks(&[1, 2, 3, 10, 11]));
        slots.retire(1, toks(&[1, 2, 20]));
        // Slot 0 shares [1, 2, 3]; slot 1 only [1, 2]; slot 2 nothing.
        let c = start(slots.admit(&toks(&[1, 2, 3, 30]), 4));
        assert_eq!((c.slot, c.shared), (0, 3));
        assert!(c.evict.is_empty());
    }

    #[test]
    fn the_prompts_last_token_is_always_read_again() {
        let mut slots = Slots::new(1, 100);
        start(slots.admit(&toks(&[1, 2, 3]), 4));
        slots.retire(0, toks(&[1, 2, 3, 7]));
        assert_eq!(start(slots.admit(&toks(&[1, 2, 3]), 4)).shared, 2);
    }

    #[test]
    fn one_slot_takes_one_question_at_a_time() {
        let mut slots = Slots::new(1, 100);
        start(slots.admit(&toks(&[1]), 4));
        assert_eq!(slots.admit(&toks(&[2]), 4), Verdict::Wait);
        slots.retire(0, toks(&[1]));
        assert_eq!(start(slots.admit(&toks(&[2]), 4)).slot, 0);
    }

    #[test]
    fn a_question_that_does_not_fit_beside_those_in_flight_waits_for_them() {
        let mut slots = Slots::new(4, 100);
        let long: Vec<i32> = (0..50).collect();
        let a = start(slots.admit(&toks(&long), 20)); // 70 cells
        assert_eq!(slots.admit(&toks(&long[..20]), 20), Verdict::Wait); // 40 > 30 free
        let small = start(slots.admit(&toks(&[9]), 29)); // exactly the 30 left
        assert_eq!(slots.in_use(), 100);
        // A cancelled question frees its cells: the worker forgot them.
        slots.retire(small.slot, Vec::new());
        slots.retire(a.slot, Vec::new());
        assert_eq!(slots.in_use(), 0);
        start(slots.admit(&toks(&long), 50));
    }

    #[test]
    fn idle_caches_make_room_and_questions_in_flight_never_do() {
        let mut slots = Slots::new(3, 100);
        let a = start(slots.admit(&toks(&(0..30).collect::<Vec<_>>()), 10));
        let b = start(slots.admit(&toks(&(100..120).collect::<Vec<_>>()), 10));
        slots.retire(a.slot, toks(&(0..35).collect::<Vec<_>>())); // 35 cached
        slots.retire(b.slot, toks(&(100..125).collect::<Vec<_>>())); // 25 cached
        let busy = start(slots.admit(&toks(&[500]), 29)); // 30 in flight, slot 2
        assert_eq!(busy.slot, 2);
        // 40 more cells: 10 are free, the 35-cell cache goes, the other stays.
        let c = start(slots.admit(&toks(&[600]), 39));
        assert_eq!((c.slot, c.evict.clone()), (1, vec![0]));
        assert_eq!(slots.in_use(), 70);
        // Nothing idle is left to give up: a 40-cell question waits.
        assert_eq!(slots.admit(&toks(&[700]), 39), Verdict::Wait);
        assert_eq!(slots.active(), 2);
    }

    #[test]
    fn only_a_question_longer_than_the_context_is_refused() {
        let mut slots = Slots::new(2, 64);
        assert_eq!(slots.admit(&toks(&[1; 40]), 25), Verdict::TooLong);
        start(slots.admit(&toks(&[1; 40]), 24));
        assert_eq!(slots.admit(&toks(&[2; 40]), 24), Verdict::Wait);
    }

    proptest! {
        /// Whatever questions come and go, the cells held never exceed the
        /// context and never more questions run than there are slots.
        #[test]
        fn cells_in_use_never_exceed_the_context(
            ops in proptest::collection::vec((0usize..40, 1usize..30, 0usize..5, any::<bool>()), 1..60),
        ) {
            let mut slots = Slots::new(3, 100);
            let mut running: Vec<(usize, Vec<LlamaToken>)> = Vec::new();
            for (len, answer, head, retire) in ops {
                if retire && !running.is_empty() {
                    let (slot, tokens) = running.remove(0);
                    slots.retire(slot, tokens);
                } else {
                    let prompt: Vec<i32> = (0..head as i32).chain(100..100 + len as i32 + 1).collect();
                    if let Verdict::Start(a) = slots.admit(&toks(&prompt), answer) {
                        prop_assert!(running.iter().all(|(s, _)| *s != a.slot));
                        running.push((a.slot, toks(&prompt)));
                    }
                }
                prop_assert!(slots.in_use() <= 100);
                prop_assert!(slots.active() <= 3);
                prop_assert_eq!(slots.active(), running.len());
            }
        }
    }
}
