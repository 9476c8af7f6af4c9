//! `mpreg token issue`: mints a client token (for development, tests, and small
//! deployments that keep the signing key next to the CLI).

use std::path::PathBuf;

use clap::Subcommand;

use crate::auth::{Claims, TokenIssuer};
use crate::env::Env;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a signed token (JWT) to stdout
    Issue {
        /// HS256: the secret file the nodes' --jwt-secret-file names
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "key_file",
            required_unless_present = "key_file"
        )]
        secret_file: Option<PathBuf>,
        /// RS256 or EdDSA: the PEM private key whose public half the nodes'
        /// --jwt-public-key-file names
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// Who the token is for (`sub`; what --allowed-clients lists)
        #[arg(long)]
        sub: String,
        /// Roles it carries (repeatable, or comma-separated), e.g. caller, worker, admin
        #[arg(long = "role", value_delimiter = ',', value_name = "ROLE")]
        roles: Vec<String>,
        /// How long it is valid: seconds, or a number with s, m, h or d
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Issuer (`iss`), for nodes started with --jwt-issuer
        #[arg(long)]
        issuer: Option<String>,
        /// Audience (`aud`), for nodes started with --jwt-audience
        #[arg(long)]
        audience: Option<String>,
    },
}

/// Longest validity `--ttl` takes: tokens are bearer credentials, and a short life is
/// their revocation.
const MAX_TTL_S: u64 = 366 * 24 * 3600;

/// `90`, `90s`, `15m`, `1h`, `7d` → seconds.
fn parse_ttl(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("--ttl `{text}`: expected e.g. 90, 90s, 15m, 1h or 7d"))?;
    let unit_s = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "--ttl `{text}`: unknown unit `{other}` (s, m, h or d)"
            ));
        }
    };
    let s = n.saturating_mul(unit_s);
    if s == 0 || s > MAX_TTL_S {
        return Err(format!("--ttl `{text}`: must be between 1 s and 366 d"));
    }
    Ok(s)
}

pub fn run(cmd: TokenCommand, env: &Env) -> i32 {
    match issue(cmd, env) {
        Ok(token) => {
            println!("{token}");
            0
        }
        Err(e) => {
            eprintln!("mpreg token: {e}");
            1
        }
    }
}

fn issue(cmd: TokenCommand, env: &Env) -> Result<String, String> {
    let TokenCommand::Issue {
        secret_file,
        key_file,
        sub,
        roles,
        ttl,
        issuer,
        audience,
    } = cmd;
    let ttl = parse_ttl(&ttl)?;
    let signer = match (&secret_file, &key_file) {
        (Some(path), _) => TokenIssuer::from_secret_file(path),
        (None, Some(path)) => TokenIssuer::from_private_key_file(path),
        (None, None) => return Err("give --secret-file or --key-file".to_owned()),
    }
    .map_err(|e| e.to_string())?;
    if sub.is_empty() || sub.len() > crate::auth::MAX_SUBJECT_BYTES {
        return Err(format!(
            "--sub must have 1 to {} bytes",
            crate::auth::MAX_SUBJECT_BYTES
        ));
    }
    let now = env.clock.wall_ms() / 1000;
    let claims = Claims {
        sub,
        exp: now + ttl,
        roles: roles
            .into_iter()
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect(),
        iat: Some(now),
        nbf: None,
        iss: issuer,
        aud: audience,
    };
    signer.issue(&claims).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_take_a_unit_and_stay_within_a_year() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl(" 1h "), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(7 * 86_400));
        for bad in ["", "h", "0", "1w", "-5m", "400d", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
