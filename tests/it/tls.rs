//! Native HTTPS (`TLS_CERT_PATH`, `TLS_KEY_PATH`): the service serves only HTTPS on BIND_ADDR
//! with the configured certificate; plain HTTP on that port is never answered; bad files stop
//! start-up with the variable's name.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use cognie_sync::{App, Config, Role};

use crate::support::{
    TestApp,
    app::{API_TOKEN, TempDir, base_settings, expect_json},
    fixtures,
};

fn tls_fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls").join(name);
    path.to_str().expect("utf-8 path").to_owned()
}

fn with_tls(settings: &mut HashMap<&'static str, String>) {
    settings.insert("TLS_CERT_PATH", tls_fixture("localhost.crt"));
    settings.insert("TLS_KEY_PATH", tls_fixture("localhost.key"));
}

/// A client that trusts the test certificate (and nothing else), reaching `localhost` at the
/// app's address.
fn trusting_client(app: &TestApp) -> reqwest::Client {
    let pem = std::fs::read(tls_fixture("localhost.crt")).expect("read the test certificate");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM certificate"))
        .tls_built_in_root_certs(false)
        .resolve("localhost", app.addr)
        .https_only(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

#[tokio::test]
async fn https_serves_the_api_and_signed_webhooks() {
    let app = TestApp::spawn_with(with_tls).await;
    let client = trusting_client(&app);
    let port = app.addr.port();

    // By name and by IP address: the certificate names both.
    for host in ["localhost", "127.0.0.1"] {
        let health = client.get(format!("https://{host}:{port}/healthz")).send().await.expect("GET /healthz");
        assert_eq!(expect_json(health, 200).await["status"], "ok", "over https://{host}");
    }
    let ready = client.get(format!("https://localhost:{port}/readyz")).send().await.expect("GET /readyz");
    expect_json(ready, 200).await;

    // A Notion delivery exactly as Notion signs it.
    let name = "webhook_page_content_updated.json";
    let body = fixtures::bytes(name);
    let signature = fixtures::signatures().by_file[name].clone();
    let response = client
        .post(format!("https://localhost:{port}/api/notion/webhook/notion"))
        .header("content-type", "application/json")
        .header("X-Notion-Signature", signature)
        .body(body)
        .send()
        .await
        .expect("POST webhook over HTTPS");
    let ack = expect_json(response, 200).await;
    assert_eq!(ack["status"], "accepted", "{ack}");
    assert_eq!(app.count("select count(*) from webhook_events").await, 1);

    // The management API, with its bearer token, over the same TLS.
    let stats = client
        .get(format!("https://localhost:{port}/api/queue/stats"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("GET stats");
    expect_json(stats, 200).await;

    app.stop().await;
}

#[tokio::test]
async fn plain_http_and_untrusted_clients_get_nothing() {
    let app = TestApp::spawn_with(with_tls).await;
    let port = app.addr.port();

    // Plain HTTP to the HTTPS port: the TLS handshake fails, no HTTP response is ever sent.
    match app.client.get(format!("http://127.0.0.1:{port}/healthz")).send().await {
        Err(_) => {}
        Ok(response) => panic!("plain HTTP was answered: {}", response.status()),
    }
    // A client that does not trust the certificate refuses the connection.
    let default_client = reqwest::Client::builder().resolve("localhost", app.addr).build().expect("client");
    let refused = default_client.get(format!("https://localhost:{port}/healthz")).send().await;
    assert!(refused.is_err(), "an untrusted self-signed certificate must not be accepted");

    // The server is unharmed by both and still serves HTTPS.
    let health = trusting_client(&app).get(format!("https://localhost:{port}/healthz")).send().await;
    expect_json(health.expect("GET /healthz"), 200).await;
    app.stop().await;
}

/// Start-up with broken TLS settings fails before touching the database, naming the variable.
#[tokio::test]
async fn broken_tls_files_stop_start_up_with_the_variable_name() {
    let data_dir = TempDir::new();
    // No database is needed: the files are checked first (this URL is never connected to).
    let base = base_settings("postgres://postgres@127.0.0.1:1/never", data_dir.path());
    let (cert, key) = (tls_fixture("localhost.crt"), tls_fixture("localhost.key"));
    let cases = [
        // Missing files, a key where the certificate belongs, a key of another certificate.
        ("/nonexistent/cert.pem".to_owned(), key.clone(), "TLS_CERT_PATH"),
        (cert.clone(), "/nonexistent/key.pem".to_owned(), "TLS_KEY_PATH"),
        (key.clone(), key.clone(), "TLS_CERT_PATH"),
        (cert.clone(), tls_fixture("unrelated.key"), "TLS_KEY_PATH"),
    ];
    for (cert, key, variable) in cases {
        let mut settings = base.clone();
        settings.insert("TLS_CERT_PATH", cert.clone());
        settings.insert("TLS_KEY_PATH", key);
        let config = Config::from_lookup(|name| settings.get(name).cloned()).expect("the settings parse");
        let err = match App::build(config, Role::Api).await {
            Ok(_) => panic!("start-up must fail for cert {cert}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(variable), "the error names {variable}: {err}");
    }
    // Only one of the two: refused by the configuration itself.
    let mut settings = base.clone();
    settings.insert("TLS_CERT_PATH", cert);
    let err = Config::from_lookup(|name| settings.get(name).cloned()).expect_err("half a TLS setting");
    assert_eq!(err.name, "TLS_KEY_PATH");
}
