//! `tinydevcrm keys ...`: API keys managed with the login session (the server refuses keys on
//! its key routes). `keys create` is the one place a key is shown, once.

use std::io::IsTerminal;

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::args::{KeysArgs, KeysCommand};
use super::client::{Session, parse};
use super::credential::{self, KEY_ENV};
use super::error::CliError;
use super::output::{escape, print_json_text};
use super::tables::{delete, done, get, list, segment, send_json};

/// Runs a `keys` subcommand, with the login session: a key cannot manage keys (the server
/// answers 403 `key_not_allowed`), so one given here is refused before anything is sent.
pub async fn run(args: KeysArgs) -> Result<(), CliError> {
    if credential::from_opts(&args.opts)?.is_some() {
        return Err(CliError::usage(format!(
            "`keys` commands use the login session, and an API key was given ({KEY_ENV} or --key-file): \
             keys cannot manage keys (the server refuses them with key_not_allowed). Unset {KEY_ENV} \
             (or drop --key-file) and run `tinydevcrm login` if needed"
        )));
    }
    let json = args.opts.json;
    let mut session = Session::open_session(&args.opts)?;
    match args.command {
        KeysCommand::Create {
            name,
            scopes,
            expires_at,
            rate_limit,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            body.insert("scopes".into(), json!(scopes));
            if let Some(at) = expires_at {
                // Checked here for a clear local message; the server checks it again.
                chrono::DateTime::parse_from_rfc3339(&at).map_err(|e| {
                    CliError::usage(format!(
                        "--expires-at takes an RFC 3339 time such as 2027-01-01T00:00:00Z: {e}"
                    ))
                })?;
                body.insert("expires_at".into(), json!(at));
            }
            if let Some(limit) = rate_limit {
                body.insert("rate_limit_per_minute".into(), json!(limit));
            }
            let text = send_json(
                &mut session,
                Method::POST,
                "/auth/keys/",
                &Value::Object(body),
            )
            .await?;
            created(&text, json)
        }
        KeysCommand::Ls => {
            let text = get(&mut session, "/auth/keys/").await?;
            list(
                text,
                json,
                &[
                    "id",
                    "name",
                    "prefix",
                    "scopes",
                    "created_at",
                    "last_used_at",
                    "expires_at",
                ],
            )
        }
        KeysCommand::Revoke { id } => {
            delete(
                &mut session,
                &format!("/auth/keys/{}/", segment(&id)),
                false,
            )
            .await?;
            done(
                json,
                json!({"revoked": id}),
                &format!("revoked key {}", escape(&id)),
            );
            Ok(())
        }
    }
}

/// Prints a new key: with `--json` the server's whole answer; otherwise the key alone on
/// standard output (so `$(...)` captures exactly it) and what it is on standard error, with
/// the reminder that it is shown this once.
fn created(text: &str, json: bool) -> Result<(), CliError> {
    if json {
        print_json_text(text);
        return Ok(());
    }
    let value = parse(text)?;
    let Some(key) = value["key"].as_str() else {
        return Err(CliError::Server {
            status: 201,
            code: "invalid_response".to_owned(),
            detail: "the server's answer holds no key".to_owned(),
        });
    };
    let scopes: Vec<&str> = value["scopes"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    eprintln!(
        "created key {} ({}, id {}) with scopes {}{}",
        escape(value["name"].as_str().unwrap_or_default()),
        escape(value["prefix"].as_str().unwrap_or_default()),
        escape(value["id"].as_str().unwrap_or_default()),
        escape(&scopes.join(", ")),
        if std::io::stdout().is_terminal() {
            "; copy it now, it is not shown again:"
        } else {
            ""
        }
    );
    println!("{}", escape(key));
    Ok(())
}
