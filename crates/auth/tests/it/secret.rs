//! Resolving and generating the HMAC secret.

use std::sync::Arc;
use std::time::Duration;

use chorus_auth::{
    AuthConfig, AuthConfigError, HmacSecret, JwtVerifier, MintRequest, PublicKeyAlgorithm, SECRET_FILE_NAME, SecretOrigin, mint_token,
};
use chorus_core::{TokenError, TokenVerifier};

use crate::common::*;

fn mint(secret: &HmacSecret) -> String {
    mint_token(secret, &MintRequest { user: "neo".into(), ttl: Duration::from_secs(60), ..MintRequest::default() }, &SystemClock).unwrap()
}

#[tokio::test]
async fn generated_once_then_found_again() {
    let tmp = TempDir::new();
    // Directories that do not exist yet are created.
    let data_dir = tmp.path().join("nested/data");
    let path = data_dir.join(SECRET_FILE_NAME);

    let (server, origin) = JwtVerifier::from_config(&AuthConfig::default(), &data_dir, Arc::new(SystemClock)).unwrap();
    assert_eq!(origin, Some(SecretOrigin::Generated(path.clone())));
    assert!(origin.unwrap().to_string().contains("generated"));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "secret file mode {mode:o}");
    }
    let content = std::fs::read_to_string(&path).unwrap();
    let secret_text = content.trim_end();
    // 32 random bytes, base64url without padding.
    assert_eq!(secret_text.len(), 43, "{content:?}");
    assert!(secret_text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&data_dir).unwrap().count(), 1);

    // `chorus token` resolves the same secret; the server accepts its tokens.
    let cli = HmacSecret::resolve(&AuthConfig::default(), &data_dir).unwrap();
    assert_eq!(cli.origin, SecretOrigin::DataDir(path.clone()));
    assert_eq!(cli.secret.as_bytes(), secret_text.as_bytes());
    assert_eq!(server.verify(&mint(&cli.secret)).await.unwrap().user_id.as_str(), "neo");

    // A restarted server finds it too and does not regenerate.
    let (again, origin) = JwtVerifier::from_config(&AuthConfig::default(), &data_dir, Arc::new(SystemClock)).unwrap();
    assert_eq!(origin, Some(SecretOrigin::DataDir(path.clone())));
    assert!(again.verify(&mint(&cli.secret)).await.is_ok());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), content);

    // A different data directory gets a different secret.
    let other = HmacSecret::resolve(&AuthConfig::default(), &tmp.path().join("other")).unwrap();
    assert!(other.origin.is_generated());
    assert_ne!(other.secret, cli.secret);
    assert!(matches!(server.verify(&mint(&other.secret)).await, Err(TokenError::Invalid(_))));
}

#[test]
fn precedence_config_then_file_then_data_dir() {
    let tmp = TempDir::new();
    let data_dir = tmp.path();
    std::fs::write(data_dir.join(SECRET_FILE_NAME), "data-dir-secret-0123456789abcdef-0123\n").unwrap();
    let file = data_dir.join("configured-secret");
    std::fs::write(&file, "  file-secret-0123456789abcdef-0123456789\n\n").unwrap();

    let from_data_dir = HmacSecret::resolve(&AuthConfig::default(), data_dir).unwrap();
    assert_eq!(from_data_dir.secret.as_bytes(), b"data-dir-secret-0123456789abcdef-0123");
    assert_eq!(from_data_dir.origin, SecretOrigin::DataDir(data_dir.join(SECRET_FILE_NAME)));

    let with_file = AuthConfig { hmac_secret_file: Some(file.clone()), ..AuthConfig::default() };
    let from_file = HmacSecret::resolve(&with_file, data_dir).unwrap();
    // Surrounding whitespace (a trailing newline from `echo`) is not part of the secret.
    assert_eq!(from_file.secret.as_bytes(), b"file-secret-0123456789abcdef-0123456789");
    assert_eq!(from_file.origin, SecretOrigin::File(file.clone()));

    let with_value = AuthConfig { hmac_secret: Some(SECRET.into()), ..with_file.clone() };
    let from_value = HmacSecret::resolve(&with_value, data_dir).unwrap();
    assert_eq!(from_value.secret.as_bytes(), SECRET.as_bytes());
    assert_eq!(from_value.origin, SecretOrigin::Config);

    let missing = AuthConfig { hmac_secret_file: Some(data_dir.join("nope")), ..AuthConfig::default() };
    assert!(matches!(HmacSecret::resolve(&missing, data_dir), Err(AuthConfigError::Read { .. })));
    std::fs::write(&file, "\n").unwrap();
    assert!(matches!(HmacSecret::resolve(&with_file, data_dir), Err(AuthConfigError::BadSecret { .. })));
}

#[tokio::test]
async fn nothing_generated_when_public_keys_are_configured() {
    let tmp = TempDir::new();
    let config = AuthConfig { public_keys: vec![public_key(PublicKeyAlgorithm::RS256, "rsa-public.pem", None)], ..AuthConfig::default() };
    let (v, origin) = JwtVerifier::from_config(&config, tmp.path(), Arc::new(SystemClock)).unwrap();
    assert_eq!(origin, None);
    assert!(!tmp.path().join(SECRET_FILE_NAME).exists());
    assert!(matches!(HmacSecret::resolve(&config, tmp.path()), Err(AuthConfigError::NoHmacSecret)));
    assert!(matches!(v.verify(&hs256(SECRET.as_bytes(), &claims("x"))).await, Err(TokenError::Invalid(_))));

    // An existing data-dir secret is still used next to the public keys.
    std::fs::write(tmp.path().join(SECRET_FILE_NAME), format!("{SECRET}\n")).unwrap();
    let (v, origin) = JwtVerifier::from_config(&config, tmp.path(), Arc::new(SystemClock)).unwrap();
    assert!(matches!(origin, Some(SecretOrigin::DataDir(_))));
    assert!(v.verify(&hs256(SECRET.as_bytes(), &claims("x"))).await.is_ok());
}

#[test]
fn find_never_creates_the_secret_and_says_where_it_looked() {
    let tmp = TempDir::new();
    let data_dir = tmp.path().join("data");
    match HmacSecret::find(&AuthConfig::default(), &data_dir) {
        Err(AuthConfigError::SecretNotFound { path }) => {
            assert_eq!(path, data_dir.join(SECRET_FILE_NAME));
            assert!(path.is_absolute());
        }
        other => panic!("expected SecretNotFound, got {other:?}"),
    }
    assert!(!data_dir.exists(), "nothing was created");
    let message = HmacSecret::find(&AuthConfig::default(), &data_dir).unwrap_err().to_string();
    assert!(message.contains(&data_dir.join(SECRET_FILE_NAME).display().to_string()) && message.contains("chorus serve"), "{message}");
    // Once a server made it, it is found.
    let made = HmacSecret::resolve(&AuthConfig::default(), &data_dir).unwrap();
    let found = HmacSecret::find(&AuthConfig::default(), &data_dir).unwrap();
    assert_eq!(found.secret, made.secret);
    // A configured secret needs no file.
    let configured = AuthConfig { hmac_secret: Some("a configured secret of at least 32 bytes".into()), ..AuthConfig::default() };
    assert_eq!(HmacSecret::find(&configured, &tmp.path().join("none")).unwrap().origin, SecretOrigin::Config);
}
