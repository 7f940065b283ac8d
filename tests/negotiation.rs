//! Content negotiation as Prometheus 3 does it: the `Accept` header comes from
//! `scrape_protocols`; a response without a usable `Content-Type` is parsed with
//! `fallback_scrape_protocol`, and fails the scrape when there is none.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Receiver, Spate, TestServer, wait_for};

#[test]
fn accept_header_and_fallback_protocol() {
    let accepts = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = accepts.clone();
    // Answers with an empty Content-Type: only a fallback can say how to parse it.
    let target = TestServer::start(move |headers, _| {
        seen.lock()
            .unwrap()
            .push(headers.get("accept").cloned().unwrap_or_default());
        (200, "", b"untyped_metric 42\n".to_vec())
    });
    let receiver = Receiver::start(|_| 200);
    let config = format!(
        r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: with_fallback
    scrape_protocols: [PrometheusText0.0.4]
    fallback_scrape_protocol: PrometheusText0.0.4
    static_configs: [{{targets: ["{addr}"]}}]
  - job_name: without_fallback
    metrics_path: /other
    static_configs: [{{targets: ["{addr}"]}}]
remote_write:
  - url: {url}
    queue_config: {{batch_send_deadline: 500ms}}
"#,
        addr = target.addr,
        url = receiver.url()
    );
    let mut spate = Spate::start(&config, &[]);
    let up = |job: &str| {
        receiver
            .samples()
            .iter()
            .find(|s| s.label("__name__") == Some("up") && s.label("job") == Some(job))
            .map(|s| s.value)
    };
    wait_for(Duration::from_secs(60), "both jobs to report up", || {
        (up("with_fallback").is_some() && up("without_fallback").is_some()).then_some(())
    });
    assert_eq!(
        up("with_fallback"),
        Some(1.0),
        "the fallback protocol parses the body"
    );
    assert_eq!(
        up("without_fallback"),
        Some(0.0),
        "no Content-Type and no fallback fails the scrape"
    );
    let samples = receiver.samples();
    assert!(
        samples
            .iter()
            .any(|s| s.label("__name__") == Some("untyped_metric")
                && s.label("job") == Some("with_fallback")
                && s.value == 42.0)
    );
    assert!(
        !samples
            .iter()
            .any(|s| s.label("__name__") == Some("untyped_metric")
                && s.label("job") == Some("without_fallback"))
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());

    let accepts = accepts.lock().unwrap();
    assert!(
        accepts
            .iter()
            .any(|a| a == "text/plain;version=0.0.4;q=0.6,*/*;q=0.5"),
        "{accepts:?}"
    );
    assert!(
        accepts
            .iter()
            .any(|a| a == spate::exposition::DEFAULT_ACCEPT),
        "{accepts:?}"
    );
}
