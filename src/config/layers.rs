//! The config as files in layers: the main file, then the drop-ins of
//! `<main>.d/*.toml` in name order (site settings, then this board's), each
//! merged over what came before. Tables merge key by key; any other value,
//! arrays included, replaces the earlier one whole (a drop-in that sets
//! `[[models]]` states the board's models, not extra ones).
//!
//! Every key remembers the file that set it, so a problem found in the
//! merged config names the file to fix, and a relative path resolves against
//! the folder of the file that wrote it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{Config, ConfigError};

/// The drop-in folder of a main config file: `swarm.toml` -> `swarm.toml.d`.
pub fn drop_in_dir(main: &Path) -> PathBuf {
    let mut name = main.as_os_str().to_owned();
    name.push(".d");
    PathBuf::from(name)
}

/// The files a config was read from and which of them set each key.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// The main file first, then the drop-ins in the order they were merged.
    pub files: Vec<PathBuf>,
    /// Dotted key (as `mqtt.port` or `models`) -> index into `files`.
    origin: BTreeMap<String, usize>,
}

impl Layers {
    /// Reads the main file and its drop-ins and parses the merged result. A
    /// file that is not TOML, or whose keys or values do not fit, is named
    /// as the culprit: each layer is parsed on top of the ones before it, so
    /// the first layer that fails is the one that brought the problem.
    pub fn read(main: &Path) -> Result<(Config, Layers), ConfigError> {
        let mut files = vec![main.to_owned()];
        files.extend(drop_ins(main)?);
        let mut layers = Layers::default();
        let mut merged = Table::new();
        let mut config = None;
        for (index, path) in files.iter().enumerate() {
            let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                path: path.clone(),
                error,
            })?;
            let parse_error = |message: String| ConfigError::Parse {
                path: path.clone(),
                message,
            };
            if index == 0 {
                // Parsed from text, so that an error carries its line.
                config = Some(Config::parse(&text).map_err(parse_error)?);
                merged = text
                    .parse::<Table>()
                    .map_err(|e| parse_error(e.to_string()))?;
                layers.record(&merged, "", index);
                continue;
            }
            let layer = text
                .parse::<Table>()
                .map_err(|e| parse_error(e.to_string()))?;
            merge(&mut merged, layer, "", index, &mut layers);
            config = Some(
                Value::Table(merged.clone())
                    .try_into::<Config>()
                    .map_err(|e| parse_error(e.to_string()))?,
            );
        }
        layers.files = files;
        Ok((config.expect("the main file is always read"), layers))
    }

    /// The file that set `key` (`models[1].path`, `mqtt.port`), or None when
    /// the key has its default.
    pub fn file_of(&self, key: &str) -> Option<&Path> {
        let mut key = key;
        loop {
            if let Some(&i) = self.origin.get(key) {
                return self.files.get(i).map(PathBuf::as_path);
            }
            key = &key[..key.rfind(['.', '['])?];
        }
    }

    /// Whether drop-ins were merged over the main file.
    pub fn has_drop_ins(&self) -> bool {
        self.files.len() > 1
    }

    fn record(&mut self, table: &Table, prefix: &str, index: usize) {
        for (k, v) in table {
            let key = join(prefix, k);
            match v {
                Value::Table(t) => self.record(t, &key, index),
                _ => self.set(key, index),
            }
        }
    }

    /// `key` and nothing below it now comes from file `index`.
    fn set(&mut self, key: String, index: usize) {
        let below = format!("{key}.");
        self.origin.retain(|k, _| !k.starts_with(&below));
        self.origin.insert(key, index);
    }
}

/// The `*.toml` files of the drop-in folder in name order; none when the
/// folder does not exist.
fn drop_ins(main: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let dir = drop_in_dir(main);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(error) => return Err(ConfigError::Read { path: dir, error }),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|error| ConfigError::Read {
                path: dir.clone(),
                error,
            })?
            .path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn merge(into: &mut Table, from: Table, prefix: &str, index: usize, layers: &mut Layers) {
    for (k, v) in from {
        let key = join(prefix, &k);
        match (into.get_mut(&k), v) {
            (Some(Value::Table(old)), Value::Table(new)) => merge(old, new, &key, index, layers),
            (_, v) => {
                if let Value::Table(t) = &v {
                    layers.set(key.clone(), index);
                    layers.record(t, &key, index);
                } else {
                    layers.set(key, index);
                }
                into.insert(k, v);
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn drop_ins_merge_in_name_order_and_remember_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("swarm.toml");
        write(
            &main,
            "[mqtt]\nhost = \"10.0.0.1\"\nport = 1883\n[[models]]\nname = \"a\"\npath = \"a.gguf\"\n",
        );
        let d = drop_in_dir(&main);
        write(&d.join("50-board.toml"), "node = \"press-07\"\n");
        write(
            &d.join("10-site.toml"),
            "node = \"site-default\"\n[mqtt]\nhost = \"broker.plant\"\n[cloud]\nurl = \"https://llm.example/v1\"\n",
        );
        write(&d.join("README"), "not toml, not read");
        let (config, layers) = Layers::read(&main).unwrap();
        assert_eq!(config.node, "press-07", "the board's file comes last");
        assert_eq!(config.mqtt.host, "broker.plant");
        assert_eq!(config.mqtt.port, 1883, "tables merge key by key");
        assert_eq!(config.cloud.unwrap().url, "https://llm.example/v1");
        assert_eq!(layers.files.len(), 3);
        assert_eq!(
            layers.file_of("node"),
            Some(d.join("50-board.toml").as_path())
        );
        assert_eq!(
            layers.file_of("mqtt.host"),
            Some(d.join("10-site.toml").as_path())
        );
        assert_eq!(layers.file_of("mqtt.port"), Some(main.as_path()));
        assert_eq!(
            layers.file_of("cloud.url"),
            Some(d.join("10-site.toml").as_path())
        );
        assert_eq!(layers.file_of("models[0].path"), Some(main.as_path()));
        assert_eq!(layers.file_of("limits.intake_queue"), None);
    }

    #[test]
    fn an_array_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("swarm.toml");
        write(
            &main,
            "[[models]]\nname = \"a\"\npath = \"a.gguf\"\n[[models]]\nname = \"b\"\npath = \"b.gguf\"\n",
        );
        let board = drop_in_dir(&main).join("50-board.toml");
        write(&board, "[[models]]\nname = \"c\"\npath = \"c.gguf\"\n");
        let (config, layers) = Layers::read(&main).unwrap();
        let names: Vec<_> = config.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["c"]);
        assert_eq!(layers.file_of("models[0].name"), Some(board.as_path()));
    }

    #[test]
    fn the_layer_that_brings_a_problem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("swarm.toml");
        write(&main, "node = \"a\"\n");
        let site = drop_in_dir(&main).join("10-site.toml");
        write(&site, "[mqtt]\nhots = \"broker\"\n");
        let err = Layers::read(&main).unwrap_err().to_string();
        assert!(
            err.contains("10-site.toml") && err.contains("hots"),
            "{err}"
        );
        write(&site, "[mqtt\n");
        let err = Layers::read(&main).unwrap_err().to_string();
        assert!(err.contains("10-site.toml"), "{err}");
        write(&site, "[mqtt]\nport = \"many\"\n");
        let err = Layers::read(&main).unwrap_err().to_string();
        assert!(
            err.contains("10-site.toml") && err.contains("port"),
            "{err}"
        );
    }

    #[test]
    fn no_drop_in_folder_is_no_drop_ins() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("swarm.toml");
        write(&main, "node = \"a\"\n");
        let (_, layers) = Layers::read(&main).unwrap();
        assert!(!layers.has_drop_ins());
    }
}
