//! Cron math: parses a crontab (5 fields, 6 with leading seconds, or an `@hourly`-style macro)
//! in an IANA time zone, and finds the next tick after an instant, correctly across
//! daylight-saving changes.
//!
//! The `cron` crate does the field matching on wall-clock time; this module maps wall-clock
//! ticks to instants:
//! - a tick in a spring-forward gap (02:30 when clocks jump from 02:00 to 03:00) runs at the
//!   instant the pre-gap offset gives it (03:30 new time), so a daily job still runs that day
//!   and an every-15-minutes job does not run twice;
//! - a tick in a fall-back overlap (01:30 happens twice) runs once, at its first occurrence,
//!   unless the hour field is a wildcard (`*`, `*/2`, ...): such a job runs on elapsed time and
//!   fires in both passes, as Vixie cron does.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// Why a crontab or time zone was refused; the text names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not 5 or 6 fields, and not a known macro.
    #[error(
        "crontab_def {0:?} has {1} fields; use 5 (minute hour day-of-month month day-of-week), 6 (with leading seconds) or a macro such as @hourly"
    )]
    FieldCount(String, usize),
    /// One field does not parse or is out of range.
    #[error(
        "the {field} field {value:?} of crontab_def is invalid: {reason}; the {field} field takes {allowed}"
    )]
    Field {
        /// Which field (`minute`, `day-of-week`, ...).
        field: &'static str,
        /// The text of the field, as the user wrote it (cut after 64 characters, see
        /// [`MAX_SHOWN_CHARS`]).
        value: String,
        /// What is wrong with it.
        reason: String,
        /// What the field takes (`0-59`, `1-12 or JAN-DEC`, ...).
        allowed: &'static str,
    },
    /// `@foo` that is not a known macro.
    #[error(
        "unknown crontab macro {0:?}; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
    )]
    Macro(String),
    /// The fields parse but never match (such as February 30th).
    #[error("crontab_def {0:?} never fires")]
    Never(String),
    /// Not an IANA time zone name.
    #[error("unknown time zone {0:?}; use an IANA name such as \"UTC\" or \"Europe/Paris\"")]
    TimeZone(String),
}

/// A parsed crontab in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: cron::Schedule,
    tz: Tz,
    hour_wildcard: bool,
}

/// One field of a crontab: its name, the numbers it takes, and the names it takes for them.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// For messages and the problem's `allowed` member.
    allowed: &'static str,
    /// Names standing for `first_name..`: months from 1, days of the week from 0.
    names: &'static [&'static str],
    first_name: u32,
    /// Whether `?` (no specific value) is allowed.
    question_mark: bool,
}

/// The longest field accepted, in characters: every field's values fit well within it (all 60
/// minutes listed take 170). Bounds the work of checking and of the `cron` crate, which the
/// scheduler repeats for every run.
pub const MAX_FIELD_CHARS: usize = 256;

/// The most characters of a crontab, a field or a time zone an error quotes; longer text is
/// cut there and ends in `...`, so a refusal never echoes a megabyte back.
pub const MAX_SHOWN_CHARS: usize = 64;

/// `text` as an error quotes it: whole, or its first [`MAX_SHOWN_CHARS`] characters and `...`.
fn shown(text: &str) -> String {
    match text.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// The six fields of the 6-field form, in order; a 5-field crontab has no `second`.
const FIELDS: [FieldSpec; 6] = [
    FieldSpec {
        name: "second",
        min: 0,
        max: 59,
        allowed: "0-59",
        names: &[],
        first_name: 0,
        question_mark: false,
    },
    FieldSpec {
        name: "minute",
        min: 0,
        max: 59,
        allowed: "0-59",
        names: &[],
        first_name: 0,
        question_mark: false,
    },
    FieldSpec {
        name: "hour",
        min: 0,
        max: 23,
        allowed: "0-23",
        names: &[],
        first_name: 0,
        question_mark: false,
    },
    FieldSpec {
        name: "day-of-month",
        min: 1,
        max: 31,
        allowed: "1-31",
        names: &[],
        first_name: 0,
        question_mark: true,
    },
    FieldSpec {
        name: "month",
        min: 1,
        max: 12,
        allowed: "1-12 or JAN-DEC",
        names: &MONTH_NAMES,
        first_name: 1,
        question_mark: false,
    },
    FieldSpec {
        name: "day-of-week",
        min: 0,
        max: 7,
        allowed: "0-7 (0 and 7 are Sunday) or SUN-SAT",
        names: &DAY_NAMES,
        first_name: 0,
        question_mark: true,
    },
];

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

impl FieldSpec {
    fn invalid(&self, value: &str, reason: String) -> ScheduleError {
        ScheduleError::Field {
            field: self.name,
            value: shown(value),
            reason,
            allowed: self.allowed,
        }
    }

    /// Checks the field as the user wrote it: lists of `*`, `?`, `n`, `a-b`, each with an
    /// optional `/step`, every number within range. The `cron` crate checks too, but reports
    /// on the 6-field form it is given, with its own limits in the text.
    fn check(&self, text: &str) -> Result<(), ScheduleError> {
        let length = text.chars().count();
        if length > MAX_FIELD_CHARS {
            return Err(self.invalid(
                text,
                format!("it is {length} characters long; a field has at most {MAX_FIELD_CHARS}"),
            ));
        }
        for item in text.split(',') {
            let (base, step) = match item.split_once('/') {
                Some((base, step)) => (base, Some(step)),
                None => (item, None),
            };
            if let Some(step) = step {
                self.step(text, step)?;
            }
            if base == "*" || (base == "?" && self.question_mark) {
                continue;
            }
            if base.is_empty() {
                return Err(self.invalid(text, "an item of the list is empty".to_owned()));
            }
            let (low, high) = match base.split_once('-') {
                Some((low, high)) => (low, Some(high)),
                None => (base, None),
            };
            let low = self.number(text, low)?;
            if let Some(high) = high
                && low > self.number(text, high)?
            {
                return Err(self.invalid(
                    text,
                    format!("the range {} goes from high to low", shown(base)),
                ));
            }
        }
        Ok(())
    }

    /// A step (the `n` of `*/n`): digits only, from 1 to the field's largest value (the `cron`
    /// crate's limit; a larger step could only ever give the first value).
    fn step(&self, text: &str, step: &str) -> Result<u32, ScheduleError> {
        if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.invalid(
                text,
                format!("the step {:?} is not a positive whole number", shown(step)),
            ));
        }
        match step.parse::<u32>() {
            Ok(0) => Err(self.invalid(
                text,
                format!("the step {step:?} is not a positive whole number"),
            )),
            Ok(n) if n <= self.max => Ok(n),
            _ => Err(self.invalid(
                text,
                format!(
                    "the step {} is larger than {}, the field's largest value",
                    shown(step),
                    self.max
                ),
            )),
        }
    }

    /// One number (or name) of the field, within range.
    fn number(&self, text: &str, token: &str) -> Result<u32, ScheduleError> {
        if token.is_empty() {
            return Err(self.invalid(text, "a range needs a value on both sides".to_owned()));
        }
        if token.bytes().all(|b| b.is_ascii_digit()) {
            return match token.parse::<u32>() {
                Ok(n) if (self.min..=self.max).contains(&n) => Ok(n),
                _ => Err(self.invalid(text, format!("{} is out of range", shown(token)))),
            };
        }
        // Names by their first three letters (the crate also takes `Monday`, `Thurs`, ...).
        let upper = token.to_ascii_uppercase();
        let prefix = upper.get(..3).unwrap_or_default();
        match self.names.iter().position(|name| *name == prefix) {
            Some(i) => Ok(u32::try_from(i).unwrap_or(u32::MAX) + self.first_name),
            None if self.names.is_empty() => {
                Err(self.invalid(text, format!("{:?} is not a number", shown(token))))
            }
            None => Err(self.invalid(
                text,
                format!("{:?} is neither a number nor a name", shown(token)),
            )),
        }
    }
}

impl Schedule {
    /// Parses `crontab_def` in time zone `timezone` (IANA name).
    pub fn parse(crontab_def: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let tz =
            Tz::from_str(timezone.trim()).map_err(|_| ScheduleError::TimeZone(shown(timezone)))?;
        let text = crontab_def.trim();
        let fields: Vec<String> = if let Some(name) = text.strip_prefix('@') {
            let expanded = match name.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => "0 0 0 1 1 *",
                "monthly" => "0 0 0 1 * *",
                "weekly" => "0 0 0 * * 0",
                "daily" | "midnight" => "0 0 0 * * *",
                "hourly" => "0 0 * * * *",
                _ => return Err(ScheduleError::Macro(shown(text))),
            };
            expanded.split(' ').map(str::to_owned).collect()
        } else {
            let given: Vec<&str> = text.split_whitespace().collect();
            match given.len() {
                5 => std::iter::once("0")
                    .chain(given)
                    .map(str::to_owned)
                    .collect(),
                6 => given.into_iter().map(str::to_owned).collect(),
                n => return Err(ScheduleError::FieldCount(shown(text), n)),
            }
        };
        // Each field as written first, so the error names the user's field and its range.
        for (spec, field) in FIELDS.iter().zip(&fields) {
            spec.check(field)?;
        }
        let mut translated = fields.clone();
        translated[5] = day_of_week(&fields[5])?;
        // Then each field alone through the crate; its own message describes the 6-field form
        // it is given, so it is logged, not sent.
        for (i, spec) in FIELDS.iter().enumerate() {
            let mut probe = ["*"; 6];
            probe[0] = "0";
            probe[i] = translated[i].as_str();
            cron::Schedule::from_str(&probe.join(" ")).map_err(|e| {
                // Debug-formatted: the tenant's text in it cannot start a log line of its own.
                tracing::debug!(error = ?e.to_string(), field = spec.name, "the cron crate refused a field");
                spec.invalid(&fields[i], NOT_UNDERSTOOD.to_owned())
            })?;
        }
        let cron = cron::Schedule::from_str(&translated.join(" ")).map_err(|e| {
            tracing::debug!(error = ?e.to_string(), "the cron crate refused a crontab");
            FIELDS[3].invalid(&fields[3], NOT_UNDERSTOOD.to_owned())
        })?;
        let schedule = Self {
            cron,
            tz,
            hour_wildcard: fields[2].starts_with('*'),
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(ScheduleError::Never(shown(text)));
        }
        Ok(schedule)
    }

    /// The time zone the fields are read in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first tick strictly after `after`, or `None` when there is none (a past year).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Wall-clock ticks before `after`'s own local time can still lie after it when the
        // clocks go back within the next hours: start from the smaller of the two offsets.
        let offset_now = self.offset_seconds(after);
        let offset_soon = self.offset_seconds(after + Duration::hours(3));
        let start = after.naive_utc() + Duration::seconds(offset_now.min(offset_soon));
        let mut best: Option<DateTime<Utc>> = None;
        let mut stop_at: Option<NaiveDateTime> = None;
        for wall in self
            .cron
            .after(&Utc.from_utc_datetime(&(start - Duration::seconds(1))))
            .take(100_000)
        {
            let wall = wall.naive_utc();
            if stop_at.is_some_and(|stop| wall > stop) {
                break;
            }
            let (first, second) = self.instants(wall);
            for candidate in [Some(first), second].into_iter().flatten() {
                if candidate > after && best.is_none_or(|b| candidate < b) {
                    best = Some(candidate);
                }
            }
            match (best, second) {
                // An overlap where only the second pass is still ahead: an earlier tick of
                // the second pass may come from a later wall time within the hour.
                (Some(_), Some(_)) if first <= after => {
                    stop_at.get_or_insert(wall + Duration::hours(3));
                }
                (Some(_), _) => break,
                (None, _) => {}
            }
        }
        best
    }

    fn offset_seconds(&self, at: DateTime<Utc>) -> i64 {
        i64::from(
            self.tz
                .offset_from_utc_datetime(&at.naive_utc())
                .fix()
                .local_minus_utc(),
        )
    }

    /// The instant(s) of a wall-clock tick: one, two in a fall-back overlap (the second only
    /// for hour-wildcard schedules), or the pre-gap offset's reading of a skipped time.
    fn instants(&self, wall: NaiveDateTime) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => (t.with_timezone(&Utc), None),
            LocalResult::Ambiguous(a, b) => (
                a.with_timezone(&Utc),
                self.hour_wildcard.then(|| b.with_timezone(&Utc)),
            ),
            LocalResult::None => {
                let before = wall - Duration::hours(3);
                let offset = self
                    .tz
                    .offset_from_local_datetime(&before)
                    .earliest()
                    .map_or(0, |o| i64::from(o.fix().local_minus_utc()));
                (
                    Utc.from_utc_datetime(&(wall - Duration::seconds(offset))),
                    None,
                )
            }
        }
    }
}

/// The reason given when only the `cron` crate refuses a field.
const NOT_UNDERSTOOD: &str =
    "it is not understood; write numbers or names, ranges (a-b), lists (a,b) or steps (*/n)";

/// Standard cron numbers days 0-7 from Sunday (0 and 7 both Sunday); the `cron` crate numbers
/// them 1-7. Numeric items become explicit day names, which both read the same way.
fn day_of_week(field: &str) -> Result<String, ScheduleError> {
    let invalid = |reason: &str| FIELDS[5].invalid(field, reason.to_owned());
    // Each item once, in order: `seen` keeps this linear however long the list.
    let mut items = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut push = |items: &mut Vec<String>, item: &str| {
        if seen.insert(item.to_owned()) {
            items.push(item.to_owned());
        }
    };
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (
                base,
                Some(
                    step.parse::<u32>()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| invalid("the step must be a positive number"))?,
                ),
            ),
            None => (item, None),
        };
        let numeric = |s: &str| s.parse::<u32>().ok();
        let range = match base.split_once('-') {
            _ if base == "*" || base == "?" => {
                if step.is_none() {
                    push(&mut items, base);
                    continue;
                }
                Some((0, 6))
            }
            Some((a, b)) => match (numeric(a), numeric(b)) {
                (Some(a), Some(b)) => Some((a, b)),
                (None, None) => None,
                _ => return Err(invalid("a range mixes a number and a name")),
            },
            None => numeric(base).map(|n| (n, if step.is_some() { 7 } else { n })),
        };
        let Some((start, end)) = range else {
            // Names (MON-FRI): the crate reads them as standard cron does.
            push(&mut items, item);
            continue;
        };
        if start > 7 || end > 7 {
            return Err(invalid("days of the week are 0-7 (0 and 7 are Sunday)"));
        }
        if start > end {
            return Err(invalid("a range must go from low to high"));
        }
        let mut day = start;
        while day <= end {
            push(&mut items, DAY_NAMES[(day % 7) as usize]);
            // A step past the last day ends the range (never wraps round to Sunday).
            match day.checked_add(step.unwrap_or(1)) {
                Some(next) => day = next,
                None => break,
            }
        }
    }
    Ok(items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Weekday};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test timestamp")
            .with_timezone(&Utc)
    }

    fn ticks(schedule: &Schedule, from: &str, n: usize) -> Vec<DateTime<Utc>> {
        let mut at = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            at = schedule.next_after(at).expect("a next tick");
            out.push(at);
        }
        out
    }

    #[test]
    fn five_fields_are_per_minute_and_six_have_seconds() {
        let minute = Schedule::parse("* * * * *", "UTC").expect("parses");
        assert_eq!(
            ticks(&minute, "2026-01-01T10:00:30Z", 2),
            vec![utc("2026-01-01T10:01:00Z"), utc("2026-01-01T10:02:00Z")]
        );
        let second = Schedule::parse("* * * * * *", "UTC").expect("parses");
        assert_eq!(
            ticks(&second, "2026-01-01T10:00:30Z", 2),
            vec![utc("2026-01-01T10:00:31Z"), utc("2026-01-01T10:00:32Z")]
        );
        let every_15s = Schedule::parse("*/15 * * * * *", "UTC").expect("parses");
        assert_eq!(
            ticks(&every_15s, "2026-01-01T10:00:00Z", 2),
            vec![utc("2026-01-01T10:00:15Z"), utc("2026-01-01T10:00:30Z")]
        );
    }

    #[test]
    fn macros_expand() {
        let hourly = Schedule::parse("@hourly", "UTC").expect("parses");
        assert_eq!(
            ticks(&hourly, "2026-01-01T10:20:00Z", 1),
            vec![utc("2026-01-01T11:00:00Z")]
        );
        let daily = Schedule::parse("@daily", "UTC").expect("parses");
        assert_eq!(
            ticks(&daily, "2026-01-01T10:20:00Z", 1),
            vec![utc("2026-01-02T00:00:00Z")]
        );
        let weekly = Schedule::parse("@weekly", "UTC").expect("parses");
        let next = ticks(&weekly, "2026-01-01T10:20:00Z", 1)[0];
        assert_eq!(next.weekday(), Weekday::Sun);
        let yearly = Schedule::parse("@yearly", "UTC").expect("parses");
        assert_eq!(
            ticks(&yearly, "2026-03-01T00:00:00Z", 1),
            vec![utc("2027-01-01T00:00:00Z")]
        );
        assert!(matches!(
            Schedule::parse("@fortnightly", "UTC"),
            Err(ScheduleError::Macro(_))
        ));
    }

    #[test]
    fn day_of_week_numbers_are_standard_cron() {
        // 1-5 is Monday to Friday in every crontab; the cron crate alone would read Sun-Thu.
        let weekdays = Schedule::parse("0 9 * * 1-5", "UTC").expect("parses");
        // 2026-01-03 is a Saturday.
        let next = ticks(&weekdays, "2026-01-03T00:00:00Z", 5);
        let days: Vec<Weekday> = next.iter().map(|t| t.weekday()).collect();
        assert_eq!(
            days,
            vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri
            ]
        );
        for sunday in ["0 9 * * 0", "0 9 * * 7", "0 9 * * SUN"] {
            let s = Schedule::parse(sunday, "UTC").expect("parses");
            assert_eq!(
                ticks(&s, "2026-01-03T00:00:00Z", 1)[0].weekday(),
                Weekday::Sun,
                "{sunday}"
            );
        }
        let weekend = Schedule::parse("0 9 * * 6-7", "UTC").expect("parses");
        let days: Vec<Weekday> = ticks(&weekend, "2026-01-05T00:00:00Z", 2)
            .iter()
            .map(|t| t.weekday())
            .collect();
        assert_eq!(days, vec![Weekday::Sat, Weekday::Sun]);
        let names = Schedule::parse("0 9 * * MON-FRI", "UTC").expect("parses");
        assert_eq!(
            ticks(&names, "2026-01-03T00:00:00Z", 1)[0].weekday(),
            Weekday::Mon
        );
    }

    fn field_error(crontab: &str) -> (&'static str, String, String) {
        match Schedule::parse(crontab, "UTC") {
            Err(ScheduleError::Field {
                field,
                value,
                reason,
                ..
            }) => (field, value, reason),
            other => panic!("{crontab:?}: expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn a_step_past_the_last_day_of_the_week_is_refused_not_wrapped_round() {
        // Once an overflow: a panic in debug builds, a silent Sunday in release ones.
        for crontab in [
            "0 0 * * 1/4294967295",
            "0 0 * * 6/4294967290",
            "0 0 * * 1-7/4294967295",
        ] {
            let (field, _, reason) = field_error(crontab);
            assert_eq!(field, "day-of-week", "{crontab}");
            assert!(reason.contains("larger than 7"), "{crontab}: {reason}");
        }
        // The same walk below the limit: Monday only, never Sunday.
        let mut items = day_of_week("1/7").expect("parses");
        assert_eq!(items, "MON");
        items = day_of_week("6/4").expect("parses");
        assert_eq!(items, "SAT");
    }

    #[test]
    fn steps_are_digits_up_to_the_fields_largest_value() {
        for (crontab, field, reason) in [
            ("*/60 * * * *", "minute", "the step 60 is larger than 59"),
            (
                "*/999999999999999999999 * * * *",
                "minute",
                "larger than 59",
            ),
            ("0 */24 * * *", "hour", "larger than 23"),
            ("0 0 1/32 * *", "day-of-month", "larger than 31"),
            ("0 0 1 */13 *", "month", "larger than 12"),
            ("*/+5 * * * *", "minute", "not a positive whole number"),
            ("*/\u{661} * * * *", "minute", "not a positive whole number"),
            ("*/0 * * * *", "minute", "not a positive whole number"),
        ] {
            let (got, _, why) = field_error(crontab);
            assert_eq!(got, field, "{crontab}");
            assert!(why.contains(reason), "{crontab}: {why}");
        }
        assert!(Schedule::parse("*/59 */23 */31 */12 */7", "UTC").is_ok());
    }

    #[test]
    fn long_lists_are_refused_quickly_and_quoted_short() {
        let clock = std::time::Instant::now();
        let days = std::iter::repeat_n("TUE", 30_000)
            .chain(std::iter::repeat_n("1", 60_000))
            .collect::<Vec<_>>()
            .join(",");
        let (field, value, reason) = field_error(&format!("0 0 * * {days}"));
        assert_eq!(field, "day-of-week");
        assert!(reason.contains("characters long"), "{reason}");
        assert_eq!(value.chars().count(), MAX_SHOWN_CHARS + 3);
        assert!(value.ends_with("..."), "{value}");
        // The translation alone is linear too (it ran quadratic before the field limit).
        assert_eq!(day_of_week(&days).expect("translates"), "TUE,MON");
        assert!(
            clock.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            clock.elapsed()
        );
        // A list of every minute is well within the limit.
        let every = (0..60).map(|m| m.to_string()).collect::<Vec<_>>().join(",");
        assert!(Schedule::parse(&format!("{every} * * * *"), "UTC").is_ok());
    }

    #[test]
    fn errors_quote_at_most_the_start_of_long_text() {
        let long = "x".repeat(100_000);
        for error in [
            Schedule::parse(&format!("@{long}"), "UTC"),
            Schedule::parse(&format!("{long} 1 2"), "UTC"),
            Schedule::parse("* * * * *", &long),
        ] {
            let text = error.expect_err("refused").to_string();
            assert!(text.len() < 400, "{} bytes: {}", text.len(), &text[..200]);
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("61 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 32 * *", "day-of-month"),
            ("* * * 13 *", "month"),
            ("* * * * 8", "day-of-week"),
            ("* * * * funday", "day-of-week"),
            ("61 * * * * *", "second"),
            ("x * * * *", "minute"),
        ];
        for (expr, field) in cases {
            match Schedule::parse(expr, "UTC") {
                Err(ScheduleError::Field { field: f, .. }) => assert_eq!(f, field, "{expr}"),
                other => panic!("{expr}: expected a {field} error, got {other:?}"),
            }
        }
        assert!(matches!(
            Schedule::parse("* * *", "UTC"),
            Err(ScheduleError::FieldCount(_, 3))
        ));
        assert!(matches!(
            Schedule::parse("", "UTC"),
            Err(ScheduleError::FieldCount(_, 0))
        ));
        assert!(matches!(
            Schedule::parse("* * * * *", "Mars/Olympus"),
            Err(ScheduleError::TimeZone(_))
        ));
        assert!(matches!(
            Schedule::parse("0 0 30 2 *", "UTC"),
            Err(ScheduleError::Never(_))
        ));
    }

    #[test]
    fn a_value_out_of_range_is_reported_in_the_users_field_with_its_range() {
        let cases = [
            ("61 * * * *", "minute", "61", "61 is out of range", "0-59"),
            ("* 24 * * *", "hour", "24", "24 is out of range", "0-23"),
            (
                "* * 0 * *",
                "day-of-month",
                "0",
                "0 is out of range",
                "1-31",
            ),
            (
                "* * 32 * *",
                "day-of-month",
                "32",
                "32 is out of range",
                "1-31",
            ),
            (
                "* * * 13 *",
                "month",
                "13",
                "13 is out of range",
                "1-12 or JAN-DEC",
            ),
            (
                "* * * 0 *",
                "month",
                "0",
                "0 is out of range",
                "1-12 or JAN-DEC",
            ),
            (
                "* * * * 8",
                "day-of-week",
                "8",
                "8 is out of range",
                "0-7 (0 and 7 are Sunday) or SUN-SAT",
            ),
            ("60 * * * * *", "second", "60", "60 is out of range", "0-59"),
            ("0 61 * * * *", "minute", "61", "61 is out of range", "0-59"),
            (
                "0-61 * * * *",
                "minute",
                "0-61",
                "61 is out of range",
                "0-59",
            ),
            (
                "1,2,99 * * * *",
                "minute",
                "1,2,99",
                "99 is out of range",
                "0-59",
            ),
            (
                "* 5-25/2 * * *",
                "hour",
                "5-25/2",
                "25 is out of range",
                "0-23",
            ),
            ("x * * * *", "minute", "x", "\"x\" is not a number", "0-59"),
            (
                "* * * FOO *",
                "month",
                "FOO",
                "\"FOO\" is neither a number nor a name",
                "1-12 or JAN-DEC",
            ),
            (
                "* 9-5 * * *",
                "hour",
                "9-5",
                "the range 9-5 goes from high to low",
                "0-23",
            ),
            (
                "*/0 * * * *",
                "minute",
                "*/0",
                "the step \"0\" is not a positive whole number",
                "0-59",
            ),
        ];
        for (expr, field, value, reason, allowed) in cases {
            let error = Schedule::parse(expr, "UTC").expect_err(expr);
            assert_eq!(
                error.to_string(),
                format!(
                    "the {field} field {value:?} of crontab_def is invalid: {reason}; the {field} field takes {allowed}"
                ),
                "{expr}"
            );
            // Nothing of the internal 6-field form or the crate's own limits leaks out.
            assert!(!error.to_string().contains("less than"), "{expr}: {error}");
        }
        // Names and the crate's longer names are still fine.
        for fine in [
            "0 9 * JAN-MAR MON-FRI",
            "0 9 * * Monday",
            "0 9 ? * SUN",
            "0 0 1 DEC *",
        ] {
            Schedule::parse(fine, "UTC").expect(fine);
        }
    }

    #[test]
    fn time_zone_shifts_the_wall_clock() {
        let nine = Schedule::parse("0 9 * * *", "Asia/Tokyo").expect("parses");
        // 09:00 in Tokyo (UTC+9, no DST) is 00:00 UTC.
        assert_eq!(
            ticks(&nine, "2026-06-01T01:00:00Z", 1),
            vec![utc("2026-06-02T00:00:00Z")]
        );
    }

    #[test]
    fn daily_job_keeps_its_local_time_across_dst() {
        let nine = Schedule::parse("0 9 * * *", "America/New_York").expect("parses");
        // DST starts 2026-03-08: 09:00 is 14:00 UTC before, 13:00 UTC after.
        assert_eq!(
            ticks(&nine, "2026-03-07T00:00:00Z", 3),
            vec![
                utc("2026-03-07T14:00:00Z"),
                utc("2026-03-08T13:00:00Z"),
                utc("2026-03-09T13:00:00Z")
            ]
        );
        // DST ends 2026-11-01: back to 14:00 UTC.
        assert_eq!(
            ticks(&nine, "2026-10-31T00:00:00Z", 2),
            vec![utc("2026-10-31T13:00:00Z"), utc("2026-11-01T14:00:00Z")]
        );
    }

    #[test]
    fn a_time_in_the_spring_gap_still_runs_once() {
        // 02:30 does not exist on 2026-03-08 in New York; it runs at 03:30 EDT (07:30 UTC).
        let s = Schedule::parse("30 2 * * *", "America/New_York").expect("parses");
        assert_eq!(
            ticks(&s, "2026-03-07T12:00:00Z", 2),
            vec![utc("2026-03-08T07:30:00Z"), utc("2026-03-09T06:30:00Z")]
        );
        // Every 30 minutes: no tick twice, none lost in elapsed time.
        let half = Schedule::parse("*/30 * * * *", "America/New_York").expect("parses");
        let got = ticks(&half, "2026-03-08T06:00:00Z", 4);
        assert_eq!(
            got,
            vec![
                utc("2026-03-08T06:30:00Z"), // 01:30 EST
                utc("2026-03-08T07:00:00Z"), // 03:00 EDT (02:00 maps here)
                utc("2026-03-08T07:30:00Z"), // 03:30 EDT
                utc("2026-03-08T08:00:00Z"), // 04:00 EDT
            ]
        );
    }

    #[test]
    fn a_time_in_the_autumn_overlap_runs_once_unless_the_hour_is_a_wildcard() {
        // 01:30 happens at 05:30 UTC (EDT) and 06:30 UTC (EST) on 2026-11-01.
        let fixed = Schedule::parse("30 1 * * *", "America/New_York").expect("parses");
        assert_eq!(
            ticks(&fixed, "2026-11-01T00:00:00Z", 2),
            vec![utc("2026-11-01T05:30:00Z"), utc("2026-11-02T06:30:00Z")]
        );
        let half = Schedule::parse("*/30 * * * *", "America/New_York").expect("parses");
        let got = ticks(&half, "2026-11-01T05:00:00Z", 5);
        assert_eq!(
            got,
            vec![
                utc("2026-11-01T05:30:00Z"), // 01:30 EDT
                utc("2026-11-01T06:00:00Z"), // 01:00 EST
                utc("2026-11-01T06:30:00Z"), // 01:30 EST
                utc("2026-11-01T07:00:00Z"), // 02:00 EST
                utc("2026-11-01T07:30:00Z"),
            ]
        );
        for pair in got.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::minutes(30));
        }
    }

    #[test]
    fn southern_hemisphere_dst() {
        // Sydney leaves DST on 2026-04-05 (03:00 AEDT -> 02:00 AEST).
        let s = Schedule::parse("0 12 * * *", "Australia/Sydney").expect("parses");
        let got = ticks(&s, "2026-04-03T00:00:00Z", 3);
        assert_eq!(
            got,
            vec![
                utc("2026-04-03T01:00:00Z"),
                utc("2026-04-04T01:00:00Z"),
                utc("2026-04-05T02:00:00Z")
            ]
        );
        for t in got {
            assert_eq!(t.with_timezone(&s.timezone()).hour(), 12);
        }
    }
}
