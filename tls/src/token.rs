//! `[receivers.otlp.auth]`: bearer tokens, compared in constant time, the token file re-read
//! when it changes.
//!
//! Tokens are kept only as SHA-256 digests. A presented token is hashed and compared with every
//! known digest with `subtle` (no early exit, and every comparison is over 32 bytes whatever the
//! token's length), so the time a check takes says nothing about how much of a token matched
//! or how long the right ones are. No token appears in an error, a log line or a `Debug` output.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use shardtel_config::{is_valid_bearer_token, AuthConfig};
use subtle::{Choice, ConstantTimeEq};

use crate::error::{Error, FileIssue};
use crate::reload::{Missing, Reloading};

/// How often `bearer_token_file` is re-read (a small file; the read is on a background thread).
pub const TOKEN_FILE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What a request's `authorization` value amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthOutcome {
    /// One of the configured tokens.
    Allowed,
    /// No `authorization` value, another scheme than `Bearer`, or an empty token: HTTP 401 /
    /// gRPC `UNAUTHENTICATED`.
    Missing,
    /// A bearer token that is not one of the configured ones: HTTP 401 / gRPC
    /// `UNAUTHENTICATED`.
    Wrong,
}

impl AuthOutcome {
    /// A metric label value: `allowed`, `missing` or `wrong`.
    pub fn label(self) -> &'static str {
        match self {
            AuthOutcome::Allowed => "allowed",
            AuthOutcome::Missing => "missing",
            AuthOutcome::Wrong => "wrong",
        }
    }
}

/// The accepted tokens of one receiver. Cheap to clone: every core gets a clone.
#[derive(Clone)]
pub struct BearerTokens {
    digests: Reloading<Vec<[u8; 32]>>,
}

impl fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerTokens")
            .field("tokens", &self.digests.load().len())
            .finish()
    }
}

impl BearerTokens {
    /// The tokens of `bearer_tokens` and of `bearer_token_file` (re-read every
    /// [`TOKEN_FILE_POLL_INTERVAL`]). Fails when the file cannot be read or has a malformed
    /// line, or when there is no token at all. Reads a file: call it before the reactors start.
    pub fn new(config: &AuthConfig) -> Result<Self, Error> {
        BearerTokens::with_poll_interval(config, TOKEN_FILE_POLL_INTERVAL)
    }

    /// Like [`BearerTokens::new`], re-reading the token file every `interval`.
    ///
    /// A changed file replaces the file's tokens as a whole. A file that became unreadable or
    /// has a malformed line keeps the previous tokens (logged once); an empty file is valid and
    /// leaves only `bearer_tokens` (so emptying it revokes its tokens).
    pub fn with_poll_interval(config: &AuthConfig, interval: Duration) -> Result<Self, Error> {
        BearerTokens::for_table("receivers.otlp.auth", config, interval)
    }

    /// Like [`BearerTokens::with_poll_interval`], for the table `table` (e.g.
    /// `receivers.zipkin.auth`), which the file's reload log lines name.
    pub fn for_table(table: &str, config: &AuthConfig, interval: Duration) -> Result<Self, Error> {
        let fixed: Vec<[u8; 32]> = config
            .bearer_tokens
            .iter()
            .map(|t| digest(t.as_bytes()))
            .collect();
        let file = config.bearer_token_file.clone();
        let paths = file.iter().cloned().collect();
        let digests =
            // A token file deleted after start-up revokes its tokens (fail closed); one that
            // cannot be read otherwise keeps them, as certificates do.
            Reloading::start_with(
                table.to_string(),
                paths,
                Some(interval),
                Missing::Empty,
                move |contents| {
                    let mut digests = fixed.clone();
                    if let (Some(path), Some(text)) = (&file, contents.first()) {
                        digests.extend(file_tokens(path, text)?.into_iter().map(digest));
                    }
                    Ok(digests)
                },
            )?;
        if digests.load().is_empty() {
            let path = config.bearer_token_file.clone().unwrap_or_default();
            return Err(FileIssue::NoTokens.at(path));
        }
        Ok(BearerTokens { digests })
    }

    /// Checks an `authorization` header (or gRPC metadata) value: `Bearer TOKEN`, the scheme in
    /// any case.
    pub fn check(&self, authorization: Option<&[u8]>) -> AuthOutcome {
        match authorization.and_then(bearer_token) {
            None => AuthOutcome::Missing,
            Some(token) if self.accepts(token) => AuthOutcome::Allowed,
            Some(_) => AuthOutcome::Wrong,
        }
    }

    /// Whether `token` (without the `Bearer ` scheme) is one of the accepted tokens.
    pub fn accepts(&self, token: &[u8]) -> bool {
        let presented = digest(token);
        let digests = self.digests.load();
        let mut matched = Choice::from(0);
        for known in digests.iter() {
            matched |= known[..].ct_eq(&presented[..]);
        }
        bool::from(matched)
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The token of a `Bearer TOKEN` value, if it is one.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer")
        || !rest.first().is_some_and(|b| *b == b' ' || *b == b'\t')
    {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The tokens of a token file: one per line; blank lines and lines starting with `#` are
/// skipped. A malformed line is an error naming its number, never its content.
fn file_tokens<'t>(path: &Path, text: &'t [u8]) -> Result<Vec<&'t [u8]>, Error> {
    let mut tokens = Vec::new();
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        match std::str::from_utf8(line) {
            Ok(token) if is_valid_bearer_token(token) => tokens.push(line),
            _ => return Err(FileIssue::BadToken { line: i + 1 }.at(path)),
        }
    }
    Ok(tokens)
}

/// Every problem with `auth`'s token file, for [`crate::FileChecker`].
pub(crate) fn check_file(auth: &AuthConfig) -> Option<Error> {
    let path = auth.bearer_token_file.as_ref()?;
    let text = match crate::pem::read(path) {
        Ok(text) => text,
        Err(e) => return Some(e),
    };
    match file_tokens(path, &text) {
        Err(e) => Some(e),
        Ok(tokens) if tokens.is_empty() && auth.bearer_tokens.is_empty() => {
            Some(FileIssue::NoTokens.at(path))
        }
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values_parse() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"  bearer \t abc  "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"BEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b"Basic YWxhZGRpbjpvcGVuc2VzYW1l"), None);
        assert_eq!(bearer_token(b"abc"), None);
        assert_eq!(bearer_token(b""), None);
    }

    #[test]
    fn token_files_skip_comments_and_name_bad_lines_only_by_number() {
        let path = Path::new("/tokens");
        let tokens = file_tokens(path, b"# rotation 2025-01\n\n  one  \r\ntwo==\n").unwrap();
        assert_eq!(tokens, [&b"one"[..], &b"two=="[..]]);
        let error = file_tokens(path, b"one\nsecret with space\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "/tokens: line 2: not a valid bearer token (letters, digits and -._~+/ followed by = padding); the value is not shown"
        );
        assert!(file_tokens(path, b"").unwrap().is_empty());
    }

    #[test]
    fn checks_against_every_configured_token() {
        let tokens = BearerTokens::new(&AuthConfig {
            bearer_tokens: vec!["first-token".into(), "second".into()],
            bearer_token_file: None,
        })
        .unwrap();
        assert_eq!(
            tokens.check(Some(b"Bearer first-token")),
            AuthOutcome::Allowed
        );
        assert_eq!(tokens.check(Some(b"bearer second")), AuthOutcome::Allowed);
        assert_eq!(tokens.check(Some(b"Bearer first-toke")), AuthOutcome::Wrong);
        assert_eq!(
            tokens.check(Some(b"Bearer first-token2")),
            AuthOutcome::Wrong
        );
        assert_eq!(tokens.check(Some(b"Bearer SECOND")), AuthOutcome::Wrong);
        assert_eq!(tokens.check(Some(b"second")), AuthOutcome::Missing);
        assert_eq!(tokens.check(None), AuthOutcome::Missing);
        let shown = format!("{tokens:?}");
        assert!(
            !shown.contains("first") && shown.contains("tokens: 2"),
            "{shown}"
        );
    }

    /// Deleting the token file revokes its tokens (they stayed accepted until a restart);
    /// the tokens of the table stay.
    #[test]
    fn a_deleted_token_file_revokes_its_tokens() {
        let dir = std::env::temp_dir().join(format!("shardtel-token-del-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        std::fs::write(&path, "from-the-file\n").unwrap();
        let tokens = BearerTokens::for_table(
            "test",
            &AuthConfig {
                bearer_tokens: vec!["fixed-token".into()],
                bearer_token_file: Some(path.clone()),
            },
            Duration::from_millis(20),
        )
        .unwrap();
        assert_eq!(
            tokens.check(Some(b"Bearer from-the-file")),
            AuthOutcome::Allowed
        );
        std::fs::remove_file(&path).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokens.check(Some(b"Bearer from-the-file")) == AuthOutcome::Allowed {
            assert!(std::time::Instant::now() < deadline, "still accepted");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            tokens.check(Some(b"Bearer from-the-file")),
            AuthOutcome::Wrong
        );
        assert_eq!(
            tokens.check(Some(b"Bearer fixed-token")),
            AuthOutcome::Allowed
        );
        // Written again, it is read again.
        std::fs::write(&path, "from-the-file\n").unwrap();
        while tokens.check(Some(b"Bearer from-the-file")) != AuthOutcome::Allowed {
            assert!(std::time::Instant::now() < deadline, "not read again");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_token_at_all_is_refused_at_start() {
        let error = BearerTokens::new(&AuthConfig::default()).unwrap_err();
        assert!(matches!(
            error,
            Error::File {
                issue: FileIssue::NoTokens,
                ..
            }
        ));
    }
}
