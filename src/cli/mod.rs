//! The command-line client: `tinydevcrm login`, `tables upload`, `channels listen`, ... It is a
//! client of the HTTP API like curl or the Python SDK, in the same binary for one download: it
//! speaks HTTP to a server (`--url`/`TDC_URL`) and names no server module (the architecture test
//! checks that). Exit codes: 0 done, 1 usage or local trouble, 2 the server said no (its
//! problem's `detail` and `code` on standard error), 3 the server could not be reached.

pub mod args;
mod client;
mod credential;
mod error;
mod keys;
mod listen;
mod output;
mod profile;
mod resources;
mod tables;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use serde_json::json;

use args::{ClientCommand, LoginArgs, Plain};
use client::Session;
use error::CliError;
use output::{escape, print_json};

/// Runs one client command and gives the process's exit code.
pub async fn run(command: ClientCommand) -> ExitCode {
    let result = match command {
        ClientCommand::Login(args) => login(args).await,
        ClientCommand::Register(args) => register(args).await,
        ClientCommand::Logout(args) => logout(args).await,
        ClientCommand::Tables(args) => tables::run(args).await,
        ClientCommand::Views(args) => resources::views(args).await,
        ClientCommand::Jobs(args) => resources::jobs(args).await,
        ClientCommand::Channels(args) => resources::channels(args).await,
        ClientCommand::Keys(args) => keys::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

/// The e-mail and password of `login`/`register`: flags, environment, or the terminal.
fn credentials(args: &LoginArgs) -> Result<(String, String), CliError> {
    let email = match &args.email {
        Some(email) => email.clone(),
        None if std::io::stdin().is_terminal() && !args.password_stdin => {
            eprint!("E-mail: ");
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(CliError::usage)?;
            line.trim().to_owned()
        }
        None => return Err(CliError::usage("give the e-mail with --email or TDC_EMAIL")),
    };
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(CliError::usage)?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else if let Ok(password) = std::env::var("TDC_PASSWORD") {
        password
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password: ").map_err(CliError::usage)?
    } else {
        return Err(CliError::usage(
            "no password: use a terminal, TDC_PASSWORD or --password-stdin",
        ));
    };
    if email.is_empty() || password.is_empty() {
        return Err(CliError::usage(
            "the e-mail and the password must not be empty",
        ));
    }
    Ok((email, password))
}

async fn login(args: LoginArgs) -> Result<(), CliError> {
    let (email, password) = credentials(&args)?;
    let mut session = Session::open_session(&args.opts)?;
    session.login(&email, &password).await?;
    if args.opts.json {
        print_json(&json!({
            "profile": session.store().name(),
            "url": session.base(),
            "email": email,
        }));
    } else {
        println!(
            "logged in to {} as {} (profile {})",
            escape(session.base()),
            escape(&email),
            escape(session.store().name())
        );
    }
    Ok(())
}

async fn register(args: LoginArgs) -> Result<(), CliError> {
    let (email, password) = credentials(&args)?;
    let session = Session::open_session(&args.opts)?;
    let request = session
        .http()
        .post(session.url("/auth/users/register/"))
        .json(&json!({ "primary_email": email, "password": password }));
    let response = session.send_anonymous(request).await?;
    let (body, _) = client::read_capped(response, client::MAX_JSON_BODY)
        .await
        .map_err(|e| error::unreachable(session.base(), &e))?;
    let text = String::from_utf8_lossy(&body);
    if args.opts.json {
        output::print_json_text(&text);
    } else {
        println!(
            "registered {} at {}; now run `tinydevcrm login`",
            escape(&email),
            escape(session.base())
        );
    }
    Ok(())
}

async fn logout(args: Plain) -> Result<(), CliError> {
    let mut session = Session::open_session(&args.opts)?;
    let was_in = session.logout().await?;
    if args.opts.json {
        print_json(&json!({ "profile": session.store().name(), "logged_out": was_in }));
    } else if was_in {
        println!("logged out (profile {})", escape(session.store().name()));
    } else {
        println!("not logged in (profile {})", escape(session.store().name()));
    }
    Ok(())
}
