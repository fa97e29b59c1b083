//! Bearer tokens: right, wrong and missing tokens; a token file rotated while running.

use std::time::{Duration, Instant};

use shardtel_config::AuthConfig;
use shardtel_tls::{AuthOutcome, BearerTokens};

use crate::support::{temp_dir, write};

const POLL: Duration = Duration::from_millis(50);

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn check(tokens: &BearerTokens, token: &str) -> AuthOutcome {
    tokens.check(Some(format!("Bearer {token}").as_bytes()))
}

#[test]
fn a_rotated_token_file_replaces_its_tokens() {
    let dir = temp_dir("tokens");
    let file = write(&dir, "tokens", "# service a\nold-token\n");
    let tokens = BearerTokens::with_poll_interval(
        &AuthConfig {
            bearer_tokens: vec!["config-token".into()],
            bearer_token_file: Some(file.clone()),
        },
        POLL,
    )
    .unwrap();
    assert_eq!(check(&tokens, "old-token"), AuthOutcome::Allowed);
    assert_eq!(check(&tokens, "config-token"), AuthOutcome::Allowed);
    assert_eq!(check(&tokens, "new-token"), AuthOutcome::Wrong);
    assert_eq!(tokens.check(None), AuthOutcome::Missing);
    assert_eq!(
        tokens.check(Some(b"Basic b2xkLXRva2Vu")),
        AuthOutcome::Missing
    );

    // Both during the overlap, then only the new one.
    write(&dir, "tokens", "old-token\nnew-token\n");
    wait_for("the new token", || {
        check(&tokens, "new-token") == AuthOutcome::Allowed
    });
    assert_eq!(check(&tokens, "old-token"), AuthOutcome::Allowed);
    write(&dir, "tokens", "new-token\n");
    wait_for("the old token's revocation", || {
        check(&tokens, "old-token") == AuthOutcome::Wrong
    });
    assert_eq!(check(&tokens, "new-token"), AuthOutcome::Allowed);

    // A malformed file keeps the current tokens; an empty one revokes the file's tokens.
    write(&dir, "tokens", "new-token\nnot a token\n");
    std::thread::sleep(POLL * 4);
    assert_eq!(check(&tokens, "new-token"), AuthOutcome::Allowed);
    write(&dir, "tokens", "");
    wait_for("the empty file", || {
        check(&tokens, "new-token") == AuthOutcome::Wrong
    });
    assert_eq!(check(&tokens, "config-token"), AuthOutcome::Allowed);
    // Clones share the reloaded set (one per core).
    let clone = tokens.clone();
    write(&dir, "tokens", "third\n");
    wait_for("the third token", || {
        check(&clone, "third") == AuthOutcome::Allowed
    });
    assert_eq!(check(&tokens, "third"), AuthOutcome::Allowed);
}

#[test]
fn a_bad_token_file_fails_at_start_without_showing_a_token() {
    let dir = temp_dir("bad-tokens");
    let file = write(&dir, "tokens", "good\nsecret value\n");
    let error = BearerTokens::new(&AuthConfig {
        bearer_tokens: Vec::new(),
        bearer_token_file: Some(file.clone()),
    })
    .unwrap_err()
    .to_string();
    assert_eq!(
        error,
        format!(
            "{}: line 2: not a valid bearer token (letters, digits and -._~+/ followed by = padding); the value is not shown",
            file.display()
        )
    );
    let empty = write(&dir, "empty", "# nothing yet\n");
    let error = BearerTokens::new(&AuthConfig {
        bearer_tokens: Vec::new(),
        bearer_token_file: Some(empty.clone()),
    })
    .unwrap_err()
    .to_string();
    assert!(
        error.ends_with(
            "no tokens in this file and bearer_tokens is empty, so every request would be refused"
        ),
        "{error}"
    );
}
