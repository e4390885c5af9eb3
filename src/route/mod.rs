//! The routing core: pure decision logic with no I/O, exhaustively tested.
//!
//! - [`safety`]: does the question ask for something dangerous? Plant rules,
//!   combined with [`harm`], the learned harm check's head and taxonomy
//!   (before generation).
//! - [`softmax`]: the multinomial logistic regression the learned layers use.
//! - [`signals`]: how sure is a model of its answer; how hard is the question;
//!   AUROC to choose signals by measurement.
//! - [`vote`]: group the swarm's answers and tally confidence-weighted votes.
//! - [`policy`]: local, swarm, cloud or refuse, step by step.
//!
//! [`crate::pipeline`] runs these decisions with the models and the cloud.

pub mod harm;
pub mod policy;
pub mod safety;
pub mod signals;
pub mod softmax;
pub mod vote;
