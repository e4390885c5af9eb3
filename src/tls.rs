//! The process's one TLS crypto provider: rustls with ring, for MQTT
//! (rumqttc) and the cloud (reqwest) alike. Both are built without a
//! provider of their own, so each asks rustls for the process default,
//! which this installs before either builds a TLS config.

/// Installs ring as the process's provider; later calls change nothing.
pub fn install_provider() {
    // Err only when a provider is installed already, which is this one.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
