//! Who this board is: its hostname and an id derived from its machine-id,
//! so that one image flashed onto many boards gives each its own `node` and
//! MQTT client id without a per-board edit (docs/fleet.md, "Identity").
//!
//! The broker disconnects a client when another connects with the same id,
//! so two boards sharing an id throw each other off in a loop; the
//! machine-id (written on first boot, unique per board) breaks that tie even
//! where every board of an image keeps the image's hostname.

use std::path::Path;

/// Where the kernel keeps the hostname of this UTS namespace (what
/// `hostname` prints), read rather than `$HOSTNAME`, which systemd does not set.
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";
/// systemd's machine-id: 32 hex digits, unique per installation.
const MACHINE_ID_FILE: &str = "/etc/machine-id";

/// The names `node` and `mqtt.client_id` may contain.
pub const HOSTNAME_VAR: &str = "${HOSTNAME}";
pub const MACHINE_ID_VAR: &str = "${MACHINE_ID}";

/// The board's hostname as a topic level: its first label (an FQDN's dots
/// would read as part of the name), with anything other than letters,
/// digits, '-' and '_' replaced by '-'.
pub fn hostname() -> Result<String, String> {
    let raw = std::fs::read_to_string(HOSTNAME_FILE)
        .map_err(|e| format!("cannot read the hostname from {HOSTNAME_FILE}: {e}"))?;
    let name = node_name(&raw);
    if name.is_empty() {
        return Err(format!("{HOSTNAME_FILE} holds no hostname"));
    }
    Ok(name)
}

/// A hostname as a node name (see [`hostname`]).
pub fn node_name(hostname: &str) -> String {
    let first = hostname.trim().split('.').next().unwrap_or_default();
    first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// This board's id for swarm-llm: 8 hex digits derived from the machine-id.
/// Derived, not the machine-id itself, which systemd asks applications not
/// to expose (it goes to the broker inside the client id).
pub fn machine_id() -> Result<String, String> {
    machine_id_from(Path::new(MACHINE_ID_FILE))
}

fn machine_id_from(path: &Path) -> Result<String, String> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the machine-id from {}: {e}", path.display()))?;
    let id = raw.trim();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{} does not hold a machine-id (32 hex digits); systemd writes one on first boot",
            path.display()
        ));
    }
    Ok(app_specific(id))
}

fn app_specific(machine_id: &str) -> String {
    let mut h = crc32fast::Hasher::new();
    h.update(b"swarm-llm:");
    h.update(machine_id.to_ascii_lowercase().as_bytes());
    format!("{:08x}", h.finalize())
}

/// Replaces `${HOSTNAME}` and `${MACHINE_ID}` in `text`, reading each only
/// when it is named.
pub fn expand(text: &str) -> Result<String, String> {
    let mut out = text.to_string();
    if out.contains(HOSTNAME_VAR) {
        out = out.replace(HOSTNAME_VAR, &hostname()?);
    }
    if out.contains(MACHINE_ID_VAR) {
        out = out.replace(MACHINE_ID_VAR, &machine_id()?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostname_becomes_a_topic_level() {
        assert_eq!(node_name("press-07\n"), "press-07");
        assert_eq!(node_name("press-07.line2.plant.example"), "press-07");
        assert_eq!(node_name("Hall 3+4"), "Hall-3-4");
        assert_eq!(node_name(""), "");
    }

    #[test]
    fn the_machine_id_is_read_derived_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("machine-id");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        let a = machine_id_from(&path).unwrap();
        assert_eq!(a.len(), 8);
        assert!(!"0123456789abcdef0123456789abcdef".contains(&a));
        std::fs::write(&path, "0123456789ABCDEF0123456789ABCDEF").unwrap();
        assert_eq!(machine_id_from(&path).unwrap(), a, "case does not matter");
        std::fs::write(&path, "fedcba98765432100123456789abcdef").unwrap();
        assert_ne!(machine_id_from(&path).unwrap(), a);
        // An image built with an empty /etc/machine-id before first boot.
        std::fs::write(&path, "").unwrap();
        assert!(machine_id_from(&path).unwrap_err().contains("first boot"));
        assert!(machine_id_from(&dir.path().join("none")).is_err());
    }

    #[test]
    fn only_named_parts_are_expanded() {
        assert_eq!(expand("edge-01").unwrap(), "edge-01");
        let host = hostname().unwrap();
        assert_eq!(expand("${HOSTNAME}-x").unwrap(), format!("{host}-x"));
    }
}
