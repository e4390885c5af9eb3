//! Process-wide policy for llama.cpp: its one backend, the OpenMP waits
//! (set by restarting the process), and waiting for the model threads
//! before the process exits.

use super::*;
use std::sync::{Condvar, Mutex, OnceLock};

use llama_cpp_2::llama_backend::LlamaBackend;

/// llama.cpp's process-wide backend, initialised once with its logging routed
/// into `tracing`.
pub fn backend() -> &'static LlamaBackend {
    static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
        LlamaBackend::init().expect("llama.cpp backend initialises once per process")
    })
}

/// Restarts the process with libgomp's waits set for several models, unless
/// the environment already sets them; returns only if it does not restart.
///
/// libgomp, llama.cpp's OpenMP runtime, waits at every node of a graph by
/// spinning a while and then sleeping in the kernel. Once a process holds
/// more OpenMP threads than CPUs it cuts the spin to 100 turns, and each
/// model thread (and the safety encoder) keeps a team of its own, idle or
/// not: with the three models of `config/swarm.toml` on 2 cores, nearly
/// every node ended in a futex sleep and wake, and the small models decoded
/// at half their speed (docs/measurements/performance.md, "Several models in one process").
/// `OMP_WAIT_POLICY=ACTIVE` makes that cut 1000 turns, about a node's wait,
/// and `GOMP_SPINCOUNT=300000` keeps the uncut spin at libgomp's default,
/// where ACTIVE alone would spin without end. libgomp reads both once, as it
/// loads, before `main` runs: hence the restart, the same program with the
/// same arguments and process id.
pub fn restart_with_openmp_waits() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return; // set by the restart, or an operator's own choice
    }
    let (Ok(exe), mut args) = (std::env::current_exe(), std::env::args_os()) else {
        return;
    };
    let Some(name) = args.next() else {
        return;
    };
    // Started through a program loader (`ld-linux.so BIN`, as the aarch64
    // tests do under qemu), the process's executable is the loader: starting
    // that again would not start this program, so run on as it is.
    if exe.file_name() != std::path::Path::new(&name).file_name() {
        return;
    }
    let mut command = std::process::Command::new(exe);
    command
        .arg0(name)
        .args(args)
        .env("OMP_WAIT_POLICY", "ACTIVE");
    if std::env::var_os("GOMP_SPINCOUNT").is_none() {
        command.env("GOMP_SPINCOUNT", "300000");
    }
    // exec returns only on failure (say, a foreign binary under an emulator
    // that cannot start another): run on with libgomp's defaults.
    let error = command.exec();
    eprintln!("note: running with libgomp's default waits: cannot restart with OMP_WAIT_POLICY set: {error}");
}

/// Counts the model threads still holding llama.cpp state, so the process can
/// wait for them before it exits: a GPU backend freed after `exit` has begun
/// tearing down the CUDA runtime aborts the process (seen on an H100), which
/// systemd would record as a failed stop.
pub(super) struct LiveWorkers;

static LIVE_WORKERS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

impl LiveWorkers {
    pub(super) fn started() {
        *LIVE_WORKERS.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    pub(super) fn ended() {
        let mut live = LIVE_WORKERS.0.lock().unwrap_or_else(|e| e.into_inner());
        *live -= 1;
        LIVE_WORKERS.1.notify_all();
    }
}

/// Waits until every model thread has freed its model and context (they end
/// once every handle to them is dropped), at most `limit`. Returns false on
/// timeout. Call it before the process exits.
pub fn wait_for_workers(limit: Duration) -> bool {
    let live = LIVE_WORKERS.0.lock().unwrap_or_else(|e| e.into_inner());
    let (live, timeout) = LIVE_WORKERS
        .1
        .wait_timeout_while(live, limit, |n| *n > 0)
        .unwrap_or_else(|e| e.into_inner());
    if timeout.timed_out() {
        tracing::warn!(threads = *live, "model threads still busy at exit");
    }
    !timeout.timed_out()
}
