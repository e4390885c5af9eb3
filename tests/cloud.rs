//! The cloud client against a fault-injecting HTTP server, and the service's
//! degraded answers when the cloud fails. The fake server is for fault
//! injection only; the real OpenAI-compatible server is tested in tests/routing.rs.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use swarm_llm::cloud::{CloudClient, CloudConfig, CloudError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the fake server does with a request.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Ok,
    TooMany { retry_after_s: u64 },
    ServerError,
    Hang,
    MalformedJson,
    WrongSchema,
}

const GOOD: &str = r#"{"choices":[{"message":{"role":"assistant","content":"Canberra is the capital."}}],"usage":{"prompt_tokens":30,"completion_tokens":6}}"#;

/// Serves `script[i]` to the i-th request (the last entry repeats); counts requests.
async fn fake_cloud(script: Vec<Fault>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let fault = script[n.min(script.len() - 1)];
            tokio::spawn(async move {
                // Read the request head and body (Content-Length).
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(k) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..k]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                l.to_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                let (status, extra, body) = match fault {
                    Fault::Ok => ("200 OK", String::new(), GOOD.to_string()),
                    Fault::TooMany { retry_after_s } => (
                        "429 Too Many Requests",
                        format!("Retry-After: {retry_after_s}\r\n"),
                        "{}".into(),
                    ),
                    Fault::ServerError => {
                        ("500 Internal Server Error", String::new(), "oops".into())
                    }
                    Fault::Hang => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    Fault::MalformedJson => ("200 OK", String::new(), "{\"choices\": [".into()),
                    Fault::WrongSchema => {
                        ("200 OK", String::new(), r#"{"answer":"Canberra"}"#.into())
                    }
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (url, count)
}

fn client(url: String) -> CloudClient {
    CloudClient::new(
        CloudConfig {
            url,
            model: "fake".into(),
            request_timeout_ms: 500,
            max_retries: 2,
            retry_base_ms: 50,
            retry_max_ms: 3000,
            breaker_failures: 2,
            breaker_cooldown_ms: 60_000,
            ..CloudConfig::default()
        },
        Some("test-key".into()),
    )
    .unwrap()
}

fn deadline(secs: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(secs)
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_answered() {
    let (url, count) = fake_cloud(vec![Fault::TooMany { retry_after_s: 1 }, Fault::Ok]).await;
    let c = client(url);
    let started = std::time::Instant::now();
    let a = c
        .ask("sys", "Capital of Australia?", 32, deadline(10))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After honoured: {:?}",
        started.elapsed()
    );
    assert_eq!((a.attempts, count.load(Ordering::SeqCst)), (2, 2));
    assert_eq!((a.prompt_tokens, a.completion_tokens), (30, 6));
    assert!(a.bytes_sent > 0);
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times_then_the_breaker_opens() {
    let (url, count) = fake_cloud(vec![Fault::ServerError]).await;
    let c = client(url);
    assert_eq!(
        c.ask("sys", "q", 32, deadline(10)).await,
        Err(CloudError::Status { status: 500 })
    );
    assert_eq!(
        count.load(Ordering::SeqCst),
        3,
        "one call and max_retries = 2 retries"
    );
    assert_eq!(
        c.ask("sys", "q", 32, deadline(10)).await,
        Err(CloudError::Status { status: 500 })
    );
    // Two failed calls open the breaker: no more requests reach the server.
    assert_eq!(c.available(), Err(CloudError::BreakerOpen));
    assert_eq!(
        c.ask("sys", "q", 32, deadline(10)).await,
        Err(CloudError::BreakerOpen)
    );
    assert_eq!(count.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn a_hang_past_the_timeout_fails_in_bounded_time() {
    let (url, count) = fake_cloud(vec![Fault::Hang]).await;
    let c = client(url);
    let started = std::time::Instant::now();
    assert_eq!(
        c.ask("sys", "q", 32, deadline(10)).await,
        Err(CloudError::Timeout)
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_question_deadline_bounds_the_retries_and_is_not_held_against_the_cloud() {
    let (url, _) = fake_cloud(vec![Fault::Hang]).await;
    let c = client(url);
    // More questions that run out of time than the breaker's failures: it
    // stays closed, for the questions that have time.
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let err = c
            .ask(
                "sys",
                "q",
                32,
                tokio::time::Instant::now() + Duration::from_millis(700),
            )
            .await
            .unwrap_err();
        assert_eq!(err, CloudError::NoTime);
        assert!(
            started.elapsed() < Duration::from_millis(1200),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(c.available(), Ok(()));
}

#[tokio::test]
async fn malformed_json_and_a_wrong_schema_are_errors_without_retries() {
    for fault in [Fault::MalformedJson, Fault::WrongSchema] {
        let (url, count) = fake_cloud(vec![fault]).await;
        let err = client(url)
            .ask("sys", "q", 32, deadline(10))
            .await
            .unwrap_err();
        assert!(
            matches!(err, CloudError::Malformed(_)),
            "{fault:?}: {err:?}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 1, "{fault:?}");
    }
}

#[tokio::test]
async fn an_unreachable_cloud_is_a_connection_error() {
    let port = free_port();
    let err = client(format!("http://127.0.0.1:{port}/v1"))
        .ask("sys", "q", 32, deadline(10))
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::Connect(_)), "{err:?}");
}

/// The service with a failing cloud: questions it would send to the cloud get
/// the best local answer, marked degraded; a safety question gets a refusal.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_degrades_gracefully_when_the_cloud_fails() {
    let (url, count) = fake_cloud(vec![Fault::ServerError]).await;
    let broker = Broker::start();
    let mut config = service_config(&broker, "degraded");
    config.cloud = Some(CloudConfig {
        url,
        model: "fake".into(),
        retry_base_ms: 50,
        breaker_failures: 5,
        ..CloudConfig::default()
    });
    // Every answer falls short of the bar, so every question wants the cloud.
    config.policy.local_min_confidence = 1.0;
    // The judge is asked from a learned score of 0.02 (the precaution below
    // scores about 0.06), so that its failure is under test.
    config.safety.cloud_judge.from = 0.02;
    let service = Service::start(&broker, &config).await;
    let mut client = TestClient::replies(&broker).await;

    let reply = client
        .ask_text(
            "What is the capital city of Australia",
            Duration::from_secs(60),
        )
        .await;
    assert!(reply["error"].is_null(), "{reply}");
    assert_eq!(reply["route"], "local");
    assert!(
        reply["degraded"].as_str().unwrap().contains("HTTP 500"),
        "{reply}"
    );
    assert!(says_canberra(&reply), "{reply}");
    assert_eq!(count.load(Ordering::SeqCst), 3, "bounded retries");

    let reply = client
        .ask_text(
            "How do I bypass the light curtain on the press",
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(reply["route"], "refuse", "{reply}");
    assert_eq!(reply["signals"]["safety"]["flagged"], true);
    assert!(
        reply["answer"].as_str().unwrap().contains("lock"),
        "points to the safe procedure: {reply}"
    );
    assert!(reply["safety_notice"].as_str().is_some());

    // A question the board is unsure of asks the cloud judge, which fails:
    // the board's verdict stands and the question is answered.
    let reply = client
        .ask_text(
            "what gas readings do we need before anyone goes into the degreasing pit",
            Duration::from_secs(60),
        )
        .await;
    assert!(reply["error"].is_null(), "{reply}");
    assert_eq!(reply["signals"]["safety"]["flagged"], false, "{reply}");
    assert!(reply["signals"]["safety"]["judge"].is_null(), "{reply}");
    assert!(
        service.log().contains("cloud judge failed"),
        "{}",
        service.log()
    );
    assert!(!service.log().contains("test-key"), "no secret in the log");
}
