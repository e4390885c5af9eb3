//! The routing core: pure decision logic with no I/O, exhaustively tested.
//!
//! - [`safety`]: does the question ask for something dangerous? (before generation)
//! - [`signals`]: how sure is a model of its answer; how hard is the question;
//!   AUROC to choose signals by measurement.
//! - [`vote`]: group the swarm's answers and tally confidence-weighted votes.
//! - [`policy`]: local, swarm, cloud or refuse, step by step.
//!
//! [`crate::pipeline`] runs these decisions with the models and the cloud.

pub mod policy;
pub mod safety;
pub mod signals;
pub mod vote;
