//! The web UI as the binary serves it: the page with its policy, the files,
//! `[web] enabled = false`, and `[web] path_prefix` for every route.

use chorus_testkit::WsClient;

use crate::process::{Served, cli_token, install_crypto, write_config};

async fn get(url: String) -> (u16, reqwest::header::HeaderMap, String) {
    install_crypto();
    let res = reqwest::get(url).await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.text().await.unwrap())
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let served = Served::start(dir.path(), &config, &[]).await;
    let (status, headers, body) = get(served.url("/")).await;
    assert_eq!(status, 200);
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'") && !csp.contains("unsafe-"), "{csp}");
    assert!(body.contains("<base href=\"/\">") && body.contains("assets/ui/app.js"), "{body}");
    for (path, kind) in [("/assets/ui/app.js", "text/javascript"), ("/assets/ui/styles.css", "text/css"), ("/assets/vendor/purify.es.mjs", "text/javascript")] {
        let (status, headers, _) = get(served.url(path)).await;
        assert_eq!(status, 200, "{path}");
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind), "{path}");
    }
    let (status, _, body) = get(served.url("/assets/ui/missing.js")).await;
    assert_eq!(status, 404);
    assert!(body.contains("\"error\":\"not_found\"") && body.contains("request_id"), "{body}");
}

#[tokio::test]
async fn the_ui_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[web]\nenabled = false\n");
    let served = Served::start(dir.path(), &config, &[]).await;
    for path in ["/", "/assets/ui/app.js"] {
        let (status, _, body) = get(served.url(path)).await;
        assert_eq!(status, 404, "{path}");
        assert!(body.contains("\"error\":\"not_found\""), "{body}");
    }
    assert_eq!(get(served.url("/health")).await.0, 200);
}

#[tokio::test]
async fn behind_a_proxy_every_route_answers_under_the_prefix_and_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[web]\npath_prefix = \"/chorus\"\n");
    let served = Served::start(dir.path(), &config, &[]).await;
    for path in ["/chorus", "/chorus/", "/"] {
        let (status, _, body) = get(served.url(path)).await;
        assert_eq!(status, 200, "{path}");
        assert!(body.contains("<base href=\"/chorus/\">"), "{path}: {body}");
    }
    for path in ["/chorus/assets/sdk/index.js", "/chorus/health", "/health", "/chorus/api/v1/openapi.json"] {
        assert_eq!(get(served.url(path)).await.0, 200, "{path}");
    }
    let token = cli_token(dir.path(), &config, "alice");
    let mut c = WsClient::connect(&format!("ws://{}/chorus/ws?token={token}", served.addr)).await.unwrap();
    assert_eq!(c.push().await["type"], "connected");
    let config = write_config(dir.path(), "[web]\npath_prefix = \"chorus/\"\n");
    let out = std::process::Command::new(crate::process::binary()).arg("serve").arg("--config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("web.path_prefix"));
}
