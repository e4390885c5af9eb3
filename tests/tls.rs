//! TLS and mutual TLS to the broker, with certificates the test makes
//! (openssl): the service and `ask` over mqtts, and a client without a
//! certificate turned away when the broker requires one.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use swarm_llm::config::TlsConfig;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=swarm-llm test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
    std::fs::write(dir.join("client.ext"), "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn) in [("server", "127.0.0.1"), ("client", "swarm-llm-test-client")] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
}

/// A broker with a plain listener (for the harness) and a TLS one; returns the TLS port.
fn tls_broker(dir: &Path, require_client_certificate: bool) -> (Broker, u16) {
    let tls_port = free_port();
    let conf = format!(
        "listener {tls_port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\nrequire_certificate {require_client_certificate}\n",
        dir.display()
    );
    let broker = Broker::start_with(&conf);
    wait_for_port(tls_port, std::time::Duration::from_secs(10));
    (broker, tls_port)
}

fn ask_tls(port: u16, certs: &Path, client_cert: bool) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "ask",
        "--timeout",
        "60",
        "--broker",
        &format!("mqtts://127.0.0.1:{port}"),
    ])
    .arg("--ca-file")
    .arg(certs.join("ca.pem"));
    if client_cert {
        cmd.arg("--cert")
            .arg(certs.join("client.pem"))
            .arg("--key")
            .arg(certs.join("client.key"));
    }
    cmd.arg("What is the capital city of Australia")
        .output()
        .unwrap()
}

async fn tls_service(
    require_client_certificate: bool,
) -> (tempfile::TempDir, Broker, Service, u16) {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let (broker, tls_port) = tls_broker(certs.path(), require_client_certificate);
    let mut config = service_config(
        &broker,
        if require_client_certificate {
            "mtls"
        } else {
            "tls"
        },
    );
    config.mqtt.port = tls_port;
    let file = |n: &str| -> PathBuf { certs.path().join(n) };
    config.mqtt.tls = Some(TlsConfig {
        ca_file: file("ca.pem"),
        client_cert_file: require_client_certificate.then(|| file("client.pem")),
        client_key_file: require_client_certificate.then(|| file("client.key")),
    });
    let service = Service::start(&broker, &config).await;
    (certs, broker, service, tls_port)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_and_ask_speak_tls() {
    let (certs, _broker, _service, port) = tls_service(false).await;
    let out = tokio::task::spawn_blocking(move || ask_tls(port, certs.path(), false))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(says_canberra(&reply), "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_admits_certified_clients_only() {
    let (certs, _broker, _service, port) = tls_service(true).await;
    let (with, without) = tokio::task::spawn_blocking(move || {
        (
            ask_tls(port, certs.path(), true),
            ask_tls(port, certs.path(), false),
        )
    })
    .await
    .unwrap();
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(says_canberra(
        &serde_json::from_slice(&with.stdout).unwrap()
    ));
    assert!(
        !without.status.success(),
        "a client without a certificate got in"
    );
}
