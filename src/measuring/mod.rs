//! The tools that measure the service, apart from its answering path:
//! nothing here runs inside `swarm-llm run`.
//!
//! - [`workload`]: labelled question sets and the scorer.
//! - [`measure`]: runs a workload through the models and replays the policy
//!   on the answers (signal AUROC, route shares, accuracy).
//! - [`eval`]: the paper's comparison (edge-only, swarm, swarm+cloud,
//!   cloud-only, a random router) with Wilson intervals, as table and JSON.
//! - [`calibrate`]: fits the policy's thresholds to a target cloud share
//!   with cross-validation, and draws the curve.
//! - [`learn`]: fits the learned router (`calibrate --learn`) and draws the
//!   routers' curves with CPT and APGR.
//! - [`stream`]: recorded answers replayed in order as one stream: the cloud
//!   share over every window with the live cut against fixed ones, and the
//!   hourly budget's pacing on a clock.
//! - [`safety_eval`]: trains the learned harm check's head and measures the
//!   safety check on labelled sets (flag rates per category, threshold curve, cost).
//! - [`plot`]: the SVG line plot those curves are drawn with.
//! - [`stats`]: percentiles, for the reports and the benchmarks.
//! - [`commands`]: the command bodies that tie these to the command line.
//! - [`cli`]: the commands' arguments and which body each runs.

pub mod calibrate;
pub mod cli;
pub mod commands;
pub mod eval;
pub mod learn;
pub mod measure;
pub mod plot;
pub mod safety_eval;
pub mod stats;
pub mod stream;
pub mod workload;
