//! `tinydevcrm views ...`, `jobs ...` and `channels ...`: one request each (but `listen`), the
//! server's JSON with `--json`, a table or a sentence otherwise.

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::args::{
    ChannelsArgs, ChannelsCommand, JobsArgs, JobsCommand, Overlap, ViewsArgs, ViewsCommand,
};
use super::client::{Session, parse};
use super::error::CliError;
use super::listen;
use super::output::{escape, print_json_text, print_list};
use super::tables::{delete, done, get, list, rows, segment, send_json, show};

/// A number the server sent, for a sentence: only a JSON number prints (its text is digits,
/// sign, point and exponent); anything else, a string with terminal controls included, is `?`.
fn number(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        _ => "?".to_owned(),
    }
}

/// Runs a `views` subcommand.
pub async fn views(args: ViewsArgs) -> Result<(), CliError> {
    let json = args.opts.json;
    let mut session = Session::open(&args.opts)?;
    match args.command {
        ViewsCommand::Create {
            name,
            sql,
            sql_file,
            unique_key,
        } => {
            let sql = match (sql, sql_file) {
                (Some(sql), _) => sql,
                (None, Some(file)) => std::fs::read_to_string(&file)
                    .map_err(|e| CliError::usage(format!("{}: {e}", file.display())))?,
                (None, None) => return Err(CliError::usage("give --sql or --sql-file")),
            };
            let mut body = json!({"view_name": name, "sql_query": sql});
            if !unique_key.is_empty() {
                body["unique_key"] = json!(unique_key);
            }
            let text = send_json(&mut session, Method::POST, "/views/create/", &body).await?;
            described(&text, json, |v| {
                format!(
                    "created view {}: {} rows",
                    escape(str_of(v, "view_name")),
                    number(&v["row_count"])
                )
            })
        }
        ViewsCommand::Ls => {
            let text = get(&mut session, "/views/").await?;
            list(text, json, &["view_name", "created_at"])
        }
        ViewsCommand::Show { name } => {
            let text = get(&mut session, &format!("/views/{}/", segment(&name))).await?;
            show(&text, json)
        }
        ViewsCommand::Refresh { name } => {
            let path = format!("/views/{}/refresh/", segment(&name));
            let text = send_json(&mut session, Method::POST, &path, &json!({})).await?;
            described(&text, json, |v| {
                let detail = match (v["row_count"].as_i64(), v["error"].as_str()) {
                    (Some(rows), _) => format!(" ({rows} rows, {} ms)", number(&v["duration_ms"])),
                    (None, Some(why)) => format!(" ({})", escape(why)),
                    (None, None) => String::new(),
                };
                format!(
                    "view {}: {}{detail}",
                    escape(&name),
                    escape(str_of(v, "status"))
                )
            })
        }
        ViewsCommand::Rows(rows_args) => rows(&mut session, "views", rows_args, json).await,
        ViewsCommand::Drop { name, cascade } => {
            delete(
                &mut session,
                &format!("/views/{}/", segment(&name)),
                cascade,
            )
            .await?;
            done(
                json,
                json!({"dropped": name}),
                &format!("dropped view {}", escape(&name)),
            );
            Ok(())
        }
    }
}

/// Runs a `jobs` subcommand.
pub async fn jobs(args: JobsArgs) -> Result<(), CliError> {
    let json = args.opts.json;
    let mut session = Session::open(&args.opts)?;
    let job_line = |v: &Value| {
        format!(
            "job {} refreshes {} at {:?} ({}){}",
            escape(str_of(v, "job_id")),
            escape(str_of(v, "view_name")),
            escape(str_of(v, "crontab_def")),
            escape(str_of(v, "timezone")),
            if v["paused"] == json!(true) {
                ", paused".to_owned()
            } else {
                format!(", next run {}", escape(str_of(v, "next_run_at")))
            }
        )
    };
    match args.command {
        JobsCommand::Create {
            view,
            cron,
            tz,
            overlap,
            retries,
            paused,
        } => {
            let mut body = Map::new();
            body.insert("view_name".into(), json!(view));
            body.insert("crontab_def".into(), json!(cron));
            if let Some(tz) = tz {
                body.insert("timezone".into(), json!(tz));
            }
            if let Some(overlap) = overlap {
                let name = match overlap {
                    Overlap::Skip => "skip",
                    Overlap::Queue => "queue",
                };
                body.insert("overlap".into(), json!(name));
            }
            if let Some(retries) = retries {
                body.insert("retries".into(), json!(retries));
            }
            if paused {
                body.insert("paused".into(), json!(true));
            }
            let text = send_json(
                &mut session,
                Method::POST,
                "/jobs/create/",
                &Value::Object(body),
            )
            .await?;
            described(&text, json, |v| format!("created {}", job_line(v)))
        }
        JobsCommand::Ls => {
            let text = get(&mut session, "/jobs/").await?;
            list(
                text,
                json,
                &[
                    "job_id",
                    "view_name",
                    "crontab_def",
                    "timezone",
                    "paused",
                    "next_run_at",
                ],
            )
        }
        JobsCommand::Show { job } => {
            let text = get(&mut session, &format!("/jobs/{}/", segment(&job))).await?;
            show(&text, json)
        }
        JobsCommand::Runs { job, limit } => {
            let mut path = format!("/jobs/{}/runs/", segment(&job));
            if let Some(limit) = limit {
                path.push_str(&format!("?limit={limit}"));
            }
            let text = get(&mut session, &path).await?;
            if json {
                print_json_text(&text);
            } else {
                let page = parse(&text)?;
                let runs = page["runs"].as_array().cloned().unwrap_or_default();
                print_list(
                    &runs,
                    &[
                        "scheduled_for",
                        "status",
                        "attempts",
                        "row_count",
                        "duration_ms",
                        "error",
                    ],
                );
            }
            Ok(())
        }
        JobsCommand::Pause { job } => {
            let path = format!("/jobs/{}/", segment(&job));
            let text =
                send_json(&mut session, Method::PATCH, &path, &json!({"paused": true})).await?;
            described(&text, json, |v| format!("paused {}", job_line(v)))
        }
        JobsCommand::Resume { job } => {
            let path = format!("/jobs/{}/", segment(&job));
            let text = send_json(
                &mut session,
                Method::PATCH,
                &path,
                &json!({"paused": false}),
            )
            .await?;
            described(&text, json, |v| format!("resumed {}", job_line(v)))
        }
        JobsCommand::Delete { job } => {
            delete(&mut session, &format!("/jobs/{}/", segment(&job)), false).await?;
            done(
                json,
                json!({"deleted": job}),
                &format!("deleted job {}", escape(&job)),
            );
            Ok(())
        }
    }
}

/// Runs a `channels` subcommand.
pub async fn channels(args: ChannelsArgs) -> Result<(), CliError> {
    let json = args.opts.json;
    let mut session = Session::open(&args.opts)?;
    match args.command {
        ChannelsCommand::Create { view, job } => {
            let body = match (view, job) {
                (Some(view), None) => json!({"view_name": view}),
                (None, Some(job)) => json!({"job_id": job}),
                _ => return Err(CliError::usage("give one of --view and --job")),
            };
            let text = send_json(&mut session, Method::POST, "/channels/create/", &body).await?;
            described(&text, json, |v| {
                format!(
                    "created channel {} on view {}",
                    escape(str_of(v, "channel_id")),
                    escape(str_of(v, "view_name"))
                )
            })
        }
        ChannelsCommand::Ls => {
            let text = get(&mut session, "/channels/").await?;
            list(
                text,
                json,
                &[
                    "channel_id",
                    "view_name",
                    "job_id",
                    "last_event_id",
                    "created_at",
                ],
            )
        }
        ChannelsCommand::Show { channel } => {
            let text = get(&mut session, &format!("/channels/{}/", segment(&channel))).await?;
            show(&text, json)
        }
        ChannelsCommand::Delete { channel } => {
            delete(
                &mut session,
                &format!("/channels/{}/", segment(&channel)),
                false,
            )
            .await?;
            done(
                json,
                json!({"deleted": channel}),
                &format!("deleted channel {}", escape(&channel)),
            );
            Ok(())
        }
        ChannelsCommand::Listen {
            channel,
            last_event_id,
        } => listen::listen(&mut session, &channel, last_event_id, json).await,
    }
}

/// Prints an object answer: as sent with `--json`, else `sentence` of it.
fn described(text: &str, json: bool, sentence: impl Fn(&Value) -> String) -> Result<(), CliError> {
    if json {
        print_json_text(text);
    } else {
        println!("{}", sentence(&parse(text)?));
    }
    Ok(())
}

/// A string member, or empty.
fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_print_only_numbers_the_server_sent_as_numbers() {
        assert_eq!(number(&json!(42)), "42");
        assert_eq!(number(&json!(1.5)), "1.5");
        assert_eq!(number(&json!("\u{202e}\u{1b}[2J")), "?");
        assert_eq!(number(&json!({"x": "\u{9b}"})), "?");
        assert_eq!(number(&Value::Null), "?");
    }
}
