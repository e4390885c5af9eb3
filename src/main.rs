//! The `swarm-llm` command: the service (`run`), a client (`ask`, `status`),
//! config tools, and with the `measure` feature the measuring commands.
//!
//! `main` parses the command line and turns the outcome into an exit code;
//! `try_main` sets up logging, loads the config where the command reads one,
//! and calls one small function per command. Exit codes are decided in
//! [`Exit::of_error`] alone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use swarm_llm::ask::{self, AskOptions};
use swarm_llm::config::{
    Config, ConfigArg, ConfigError, Layers, MqttProtocol, CONFIG_ENV, DEFAULT_CONFIG_PATH,
    MQTT_PASSWORD_ENV,
};
#[cfg(feature = "measure")]
use swarm_llm::measuring::cli::{MeasureCommand, UsageError};
use swarm_llm::mqtt::TlsFiles;
use swarm_llm::service::{self, ServiceError};
use tokio_util::sync::CancellationToken;

/// Every exit code of the command (sysexits.h where one fits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    Success = 0,
    Failure = 1,
    /// The command line is wrong (clap exits 2 itself for what it rejects;
    /// a measuring command for an argument the config contradicts).
    #[cfg_attr(not(feature = "measure"), allow(dead_code))]
    Usage = 2,
    /// `ask`: the reply carries an error.
    ErrorReply = 3,
    /// `ask`: no reply in time.
    Timeout = 4,
    /// `EX_DATAERR`: a model cannot be loaded (a corrupt or incompatible
    /// file, which a restart will not fix).
    Model = 65,
    /// `EX_CONFIG`: the config has problems. The unit lists 65 and 78 in
    /// `RestartPreventExitStatus`, so neither restart-loops.
    Config = 78,
}

/// The exit codes as `--help` and the man page show them (docs/operations.md too).
const EXIT_CODES: &str = "\
Exit codes:
  0   done (run: stopped by SIGTERM or SIGINT after draining)
  1   failed; the reason is on stderr (run: in the journal)
  2   the command line is wrong
  3   ask: the reply carries an error
  4   ask: no reply within --timeout
  65  run: a model cannot be loaded (EX_DATAERR; systemd does not restart)
  78  the config has problems (EX_CONFIG; systemd does not restart)

Config: --config FILE, else $SWARM_LLM_CONFIG, else /etc/swarm-llm/swarm.toml;
the drop-ins FILE.d/*.toml are merged over it in name order.";

impl Exit {
    /// The exit code of a command that failed with `error`.
    fn of_error(error: &anyhow::Error) -> Exit {
        if error.downcast_ref::<ConfigError>().is_some() {
            return Exit::Config;
        }
        if let Some(ServiceError::Model(_)) = error.downcast_ref::<ServiceError>() {
            return Exit::Model;
        }
        if let Some(ask::AskError::Timeout(_)) = error.downcast_ref::<ask::AskError>() {
            return Exit::Timeout;
        }
        #[cfg(feature = "measure")]
        if error.downcast_ref::<UsageError>().is_some() {
            return Exit::Usage;
        }
        Exit::Failure
    }
}

#[derive(Parser)]
#[command(
    name = "swarm-llm",
    version,
    about = "Answers MQTT questions with a swarm of small local language models",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: answer the questions of the configured broker until
    /// SIGTERM, then drain.
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Publish one question, wait for the reply and print it as JSON.
    Ask {
        /// The question.
        question: String,
        #[command(flatten)]
        broker: BrokerArgs,
        /// Topic to publish the question on.
        #[arg(long, default_value = "swarm/query/cli")]
        topic: String,
        /// Topic to receive the reply on (default: a fresh one under swarm/reply/).
        #[arg(long)]
        reply_topic: Option<String>,
        /// Seconds to wait for the reply.
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
        /// The request's id, echoed in the reply (default: a fresh one).
        #[arg(long)]
        id: Option<String>,
        /// The most tokens the answer may have.
        #[arg(long)]
        max_tokens: Option<u32>,
        /// Milliseconds the service has to answer before the request expires.
        #[arg(long)]
        deadline_ms: Option<u64>,
    },
    /// List the boards on a broker from their retained statuses: one line
    /// each (state, version, journal, models), or JSON.
    Status {
        #[command(flatten)]
        broker: BrokerArgs,
        /// The boards' `mqtt.status_topic_prefix`.
        #[arg(long, default_value = "swarm/status")]
        prefix: String,
        /// Seconds to collect statuses after subscribing.
        #[arg(long, default_value_t = 1.0)]
        wait: f64,
        /// One JSON array instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Validate the config and its drop-ins; exits 78 naming the file and
    /// key of every problem.
    CheckConfig {
        /// The config file (its drop-ins are read from FILE.d/*.toml).
        #[arg(value_name = "FILE", env = CONFIG_ENV, default_value = DEFAULT_CONFIG_PATH)]
        file: PathBuf,
    },
    /// Print the default config as TOML.
    PrintDefaultConfig,
    /// Print a shell completion script (e.g. to
    /// /usr/share/bash-completion/completions/swarm-llm).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a folder.
    Man {
        /// Write swarm-llm.1 and swarm-llm-COMMAND.1 here instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    #[cfg(feature = "measure")]
    #[command(flatten)]
    Measure(MeasureCommand),
}

/// Which broker a command-line client talks to, and how it logs in (the
/// password comes from the environment, never the command line).
#[derive(clap::Args)]
struct BrokerArgs {
    /// The broker: mqtt://HOST:PORT or mqtts://HOST:PORT.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// MQTT protocol version.
    #[arg(long, value_parser = ["5", "3.1.1"], default_value = "5")]
    mqtt: String,
    /// User name at the broker (the password: $SWARM_LLM_MQTT_PASSWORD).
    #[arg(long)]
    username: Option<String>,
    /// CA certificate (PEM) for an mqtts:// broker.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

impl BrokerArgs {
    fn login(&self) -> anyhow::Result<(MqttProtocol, ask::Login)> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
        };
        let client_auth = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        let tls = self
            .ca_file
            .as_ref()
            .map(read)
            .transpose()?
            .map(|ca| TlsFiles { ca, client_auth });
        let protocol = if self.mqtt == "5" {
            MqttProtocol::V5
        } else {
            MqttProtocol::V311
        };
        Ok((
            protocol,
            ask::Login {
                username: self.username.clone(),
                password: std::env::var(MQTT_PASSWORD_ENV).ok(),
                tls,
            },
        ))
    }
}

impl Command {
    /// Whether the command runs llama.cpp; the others (asking, listing,
    /// checking a config) need no OpenMP settings and no restart for them.
    fn runs_models(&self) -> bool {
        match self {
            Command::Run { .. } => true,
            #[cfg(feature = "measure")]
            Command::Measure(_) => true,
            _ => false,
        }
    }

    /// What the command logs. The service keeps llama.cpp's own chatter
    /// (one line per tensor at load) at warn; RUST_LOG overrides.
    fn log_filter(&self) -> &'static str {
        match self {
            Command::Run { .. } => "info,llama-cpp-2=warn",
            #[cfg(feature = "measure")]
            Command::Measure(m) => m.log_filter(),
            _ => "warn",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.runs_models() {
        swarm_llm::inference::restart_with_openmp_waits();
    }
    let in_journal = matches!(cli.command, Command::Run { .. });
    let exit = match try_main(cli.command) {
        Ok(exit) => exit,
        Err(e) => {
            // The service reports through its log (the journal under
            // systemd); the tools on stderr.
            if in_journal {
                tracing::error!("{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
            Exit::of_error(&e)
        }
    };
    ExitCode::from(exit as u8)
}

fn try_main(command: Command) -> anyhow::Result<Exit> {
    swarm_llm::logging::init(command.log_filter());
    match command {
        Command::Run { config } => run(&config.config),
        Command::Ask {
            question,
            broker,
            topic,
            reply_topic,
            timeout,
            id,
            max_tokens,
            deadline_ms,
        } => {
            let (protocol, login) = broker.login()?;
            ask_one(AskOptions {
                broker: broker.broker,
                protocol,
                topic,
                reply_topic,
                question,
                id,
                max_tokens,
                deadline_ms,
                timeout: Duration::from_secs_f64(timeout),
                login,
            })
        }
        Command::Status {
            broker,
            prefix,
            wait,
            json,
        } => status(&broker, &prefix, Duration::from_secs_f64(wait), json),
        Command::CheckConfig { file } => check_config(&file),
        Command::PrintDefaultConfig => {
            print!("{}", toml::to_string(&Config::example())?);
            Ok(Exit::Success)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "swarm-llm",
                &mut std::io::stdout(),
            );
            Ok(Exit::Success)
        }
        Command::Man { out_dir } => man(out_dir.as_deref()),
        #[cfg(feature = "measure")]
        Command::Measure(m) => {
            let (config, _) = load_config(m.config_path())?;
            block_on(m.run(config))?;
            Ok(Exit::Success)
        }
    }
}

/// The one place a config is loaded for a command: the file, its drop-ins,
/// and which files they were.
fn load_config(path: &Path) -> anyhow::Result<(Config, Layers)> {
    Ok(Config::load_layers(path)?)
}

fn run(path: &Path) -> anyhow::Result<Exit> {
    let (config, _) = load_config(path)?;
    block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        service::run(config, shutdown).await
    })?;
    Ok(Exit::Success)
}

fn check_config(path: &Path) -> anyhow::Result<Exit> {
    let (config, layers) = load_config(path)?;
    let files: Vec<String> = layers
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    println!(
        "{}: ok (node {}, client id {})",
        files.join(" + "),
        config.node,
        config.client_id()
    );
    Ok(Exit::Success)
}

fn ask_one(options: AskOptions) -> anyhow::Result<Exit> {
    let payload = block_on(ask::ask(options))?;
    println!("{}", String::from_utf8_lossy(&payload));
    let failed = serde_json::from_slice::<serde_json::Value>(&payload)
        .map_or(true, |v| !v["error"].is_null());
    Ok(if failed {
        Exit::ErrorReply
    } else {
        Exit::Success
    })
}

fn status(broker: &BrokerArgs, prefix: &str, wait: Duration, json: bool) -> anyhow::Result<Exit> {
    let (protocol, login) = broker.login()?;
    let boards = block_on(ask::statuses(
        &broker.broker,
        protocol,
        &login,
        prefix,
        wait,
    ))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&boards)?);
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        print!("{}", ask::render_statuses(&boards, now));
    }
    Ok(Exit::Success)
}

fn man(out_dir: Option<&Path>) -> anyhow::Result<Exit> {
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(Cli::command(), dir)?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            out.flush()?;
        }
    }
    Ok(Exit::Success)
}

fn block_on<F: std::future::Future>(work: F) -> F::Output {
    let out = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(work);
    swarm_llm::inference::wait_for_workers(Duration::from_secs(10));
    out
}

/// First SIGTERM or SIGINT: graceful drain. A second one: exit at once.
async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    for round in 0..2 {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if round == 0 {
            tracing::info!("signal received: draining (send it again to exit at once)");
            shutdown.cancel();
        }
    }
    tracing::warn!("second signal: exiting without draining");
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "swarm-llm", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn the_help_lists_every_exit_code() {
        for exit in [
            Exit::Success,
            Exit::Failure,
            Exit::Usage,
            Exit::ErrorReply,
            Exit::Timeout,
            Exit::Model,
            Exit::Config,
        ] {
            let line = format!("\n  {:<3} ", exit as u8);
            assert!(EXIT_CODES.contains(&line), "{exit:?} not in the help");
        }
    }

    #[test]
    fn a_config_error_exits_78() {
        let e = anyhow::Error::from(ConfigError::Parse {
            path: "x".into(),
            message: "y".into(),
        });
        assert_eq!(Exit::of_error(&e), Exit::Config);
        assert_eq!(Exit::of_error(&anyhow::anyhow!("other")), Exit::Failure);
    }
}
