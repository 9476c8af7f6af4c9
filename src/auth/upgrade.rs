//! The token on a WebSocket upgrade: `Authorization: Bearer <token>`, or the `token` query
//! parameter (the original's clients take only a URL). A refused upgrade is answered with
//! HTTP 401 and a one-line reason, before any WebSocket exists.

use super::AuthError;
use super::token::MAX_TOKEN_BYTES;

/// The token a client presented: from the `Authorization` header when it has one (it wins
/// over the query), else from `?token=`. `None`: neither was given.
pub fn presented_token<'r>(
    authorization: Option<&'r [u8]>,
    query: Option<&'r str>,
) -> Result<Option<std::borrow::Cow<'r, str>>, AuthError> {
    if let Some(value) = authorization {
        let value = std::str::from_utf8(value)
            .map_err(|_| AuthError::Invalid("the Authorization header is not UTF-8".into()))?
            .trim();
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| {
                AuthError::Invalid("the Authorization header is not `Bearer <token>`".into())
            })?;
        return Ok(Some(token.into()));
    }
    let Some(query) = query else {
        return Ok(None);
    };
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "token" {
            if value.len() > MAX_TOKEN_BYTES * 3 {
                return Err(AuthError::TooLong { len: value.len() });
            }
            return percent_decoded(value).map(Some);
        }
    }
    Ok(None)
}

/// `value` with `%XX` escapes decoded (a JWT needs none, but a URL-building library may
/// escape its dots or padding).
fn percent_decoded(value: &str) -> Result<std::borrow::Cow<'_, str>, AuthError> {
    if !value.contains('%') {
        return Ok(value.into());
    }
    let bad = || AuthError::Invalid("the `token` query parameter has a bad %-escape".into());
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .ok_or_else(bad)?;
            // Two hex digits (checked above): `from_str_radix` alone would take a sign.
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map(Into::into).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_wins_and_the_query_is_read_otherwise() {
        let t = |h: Option<&str>, q: Option<&str>| {
            presented_token(h.map(str::as_bytes), q).map(|o| o.map(|c| c.into_owned()))
        };
        assert_eq!(
            t(Some("Bearer abc"), Some("token=xyz")),
            Ok(Some("abc".into()))
        );
        assert_eq!(t(Some("bearer  abc "), None), Ok(Some("abc".into())));
        assert_eq!(t(None, Some("a=1&token=xyz&b=2")), Ok(Some("xyz".into())));
        assert_eq!(t(None, Some("token=a%2Eb")), Ok(Some("a.b".into())));
        assert_eq!(t(None, Some("tokens=x")), Ok(None));
        assert_eq!(t(None, None), Ok(None));
        assert!(t(Some("Basic dXNlcjpwYXNz"), None).is_err());
        assert!(t(Some("Bearer"), None).is_err());
        assert!(t(None, Some("token=%zz")).is_err());
        assert!(
            t(None, Some("token=%+1")).is_err(),
            "a sign is not a hex digit"
        );
        assert!(
            t(None, Some("token=%e2")).is_err(),
            "not UTF-8 once decoded"
        );
        let long = format!("token={}", "a".repeat(MAX_TOKEN_BYTES * 3 + 1));
        assert!(matches!(
            t(None, Some(&long)),
            Err(AuthError::TooLong { .. })
        ));
    }
}
