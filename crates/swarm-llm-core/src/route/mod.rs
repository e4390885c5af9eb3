//! The routing core: pure decision logic with no I/O, exhaustively tested.
//!
//! - [`safety`]: does the question ask for something dangerous? Plant rules,
//!   combined with [`harm`], the learned harm check's head and taxonomy
//!   (before generation), both reading the question with its disguises
//!   undone ([`disguise`]).
//! - [`choice`]: multiple-choice options, which one an answer picks, and the
//!   signals of a model's probabilities over the option letters.
//! - [`softmax`]: the multinomial logistic regression the learned layers use.
//! - [`signals`]: how sure is a model of its answer; how hard is the question;
//!   AUROC to choose signals by measurement.
//! - [`vote`]: group the swarm's answers and tally confidence-weighted votes.
//! - [`learned`]: the learned router's score, how likely the cloud is to
//!   turn the first answer from wrong to right.
//! - [`load`]: whether a model thread can still answer in time, from its
//!   queue and job times.
//! - [`policy`]: local, swarm, cloud or refuse, step by step.
//! - [`share`]: the cloud share the operator sets, held online by moving the
//!   learned router's cut, and the hourly budget paced.
//! - [`walk`]: the steps joined into one walk, as a stepper that returns the
//!   next action; the service's pipeline carries its actions out with the models
//!   and the cloud, and the measurements replay it on recorded answers.

pub mod choice;
pub mod disguise;
pub mod harm;
pub mod learned;
pub mod load;
pub mod policy;
pub mod safety;
pub mod share;
pub mod signals;
pub mod softmax;
pub mod vote;
pub mod walk;

/// Writes a threshold as the shortest decimal that reads back as the same
/// f32 (`0.6`, not `0.6000000238418579`): configs are read and diffed by
/// people (`print-default-config`, `calibrate --out`).
pub fn f32_as_written<S: serde::Serializer>(value: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(value.to_string().parse().unwrap_or(f64::from(*value)))
}
