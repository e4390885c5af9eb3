//! The live cloud share controller ([`crate::route::share`]) behind a lock,
//! kept in the journal's folder so that a restart (or a kill) resumes with
//! the window and the aim it had instead of the fitted cut.
//!
//! The file is small (a few kilobytes of postcard) and rewritten whole,
//! through a temporary file and a rename, every [`SAVE_EVERY`] questions and
//! when the service stops; a kill loses at most those questions' updates.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use crate::config::Config;
use crate::route::share::{self, CloudShare, Observed, Saved, ShareStatus};

/// Questions between two saves.
const SAVE_EVERY: usize = 25;
/// The file's name in the journal folder.
const FILE: &str = "cloud-share.postcard";

#[derive(Debug, thiserror::Error)]
pub enum ShareFileError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a saved cloud share: {source}")]
    Decode {
        path: PathBuf,
        source: postcard::Error,
    },
}

pub struct ShareKeeper {
    state: Mutex<Kept>,
    file: Option<PathBuf>,
}

struct Kept {
    share: CloudShare,
    unsaved: usize,
}

impl ShareKeeper {
    /// The controller when `routing.cloud_share` is set (validation makes
    /// sure a learned router is there), resumed from its file when the
    /// journal folder has one.
    pub fn from_config(config: &Config) -> Option<Self> {
        let target = config.routing.cloud_share?;
        let fitted_cut = config.policy.learned.as_ref()?.cloud_at;
        let budget = config.cloud.as_ref().map(|c| c.calls_per_hour);
        let mut share = CloudShare::new(target, share::WINDOW, fitted_cut, budget, Instant::now());
        let file = config.journal.as_ref().map(|j| j.dir.join(FILE));
        if let Some(path) = &file {
            match load(path) {
                Ok(Some(saved)) => {
                    share.restore(saved);
                    tracing::info!(path = %path.display(), "cloud share resumed");
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("{e}; the cloud share starts from the fitted cut"),
            }
        }
        Some(Self {
            state: Mutex::new(Kept { share, unsaved: 0 }),
            file,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // The state is a few numbers; one left half-updated by a panic is
        // still a usable controller.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The learned router's cut for the next question.
    pub fn cut(&self) -> f32 {
        self.lock().share.cut()
    }

    pub fn status(&self) -> ShareStatus {
        self.lock().share.status(Instant::now())
    }

    /// Records a question the cloud could have taken; saves now and then.
    pub fn observe(&self, o: Observed) {
        let due = {
            let mut k = self.lock();
            k.share.observe(o, Instant::now());
            k.unsaved += 1;
            (k.unsaved >= SAVE_EVERY).then(|| {
                k.unsaved = 0;
                k.share.saved()
            })
        };
        if let Some(saved) = due {
            self.write(&saved);
        }
    }

    /// Saves the state now (at shutdown).
    pub fn save(&self) {
        let saved = self.lock().share.saved();
        self.write(&saved);
    }

    fn write(&self, saved: &Saved) {
        let Some(path) = &self.file else { return };
        if let Err(e) = store(path, saved) {
            tracing::warn!("{e}; the cloud share goes on, but a restart would start it afresh");
        }
    }
}

fn load(path: &Path) -> Result<Option<Saved>, ShareFileError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ShareFileError::Read {
                path: path.into(),
                source,
            })
        }
    };
    postcard::from_bytes(&bytes)
        .map(Some)
        .map_err(|source| ShareFileError::Decode {
            path: path.into(),
            source,
        })
}

fn store(path: &Path, saved: &Saved) -> Result<(), ShareFileError> {
    let bytes = postcard::to_stdvec(saved).expect("the saved share serialises");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| ShareFileError::Write {
            path: path.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_share_reads_back_and_a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        assert!(load(&path).unwrap().is_none());
        let saved = Saved {
            target: 0.25,
            scores: vec![0.1, 0.7, 0.4],
            sent: vec![false, true, false],
            aim: 0.3,
        };
        store(&path, &saved).unwrap();
        assert_eq!(load(&path).unwrap(), Some(saved));
        std::fs::write(&path, b"\xff\xff\xff\xff\xff").unwrap();
        assert!(matches!(load(&path), Err(ShareFileError::Decode { .. })));
    }
}
