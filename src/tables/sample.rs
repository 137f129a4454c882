//! `tinydevcrm sample`: deterministic telephone call records (a start and an end record per
//! call, the shape of the telephone-billing seed), for `sample.parquet`, tests and benchmarks.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{
    Int64Array, Int64Builder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, Duration, TimeZone, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Calls per written batch.
const CALLS_PER_BATCH: usize = 4096;

/// The schema of call records.
pub fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("record_id", DataType::Int64, false),
        Field::new("record_type", DataType::Utf8, false),
        Field::new(
            "record_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("call_id", DataType::Int64, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("destination", DataType::Utf8, false),
    ]))
}

fn phone_number(rng: &mut StdRng) -> String {
    let area: u32 = rng.random_range(11..=99);
    let digits = if rng.random_bool(0.5) { 8 } else { 9 };
    let low = 10u64.pow(digits - 1);
    let number: u64 = rng.random_range(low..low * 10);
    format!("{area}{number}")
}

/// One call: when it starts and how long it lasts. About a third start close to 22:00, 06:00 or
/// midnight and run across it, so the billing rules' edges are exercised.
fn call_times(
    rng: &mut StdRng,
    first_day: DateTime<Utc>,
    days: i64,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let day = first_day + Duration::days(rng.random_range(0..days));
    let (start, seconds) = match rng.random_range(0..6) {
        0 => (
            day + Duration::hours(21) + Duration::minutes(rng.random_range(30..60)),
            rng.random_range(600..5400),
        ),
        1 => (
            day + Duration::hours(5) + Duration::minutes(rng.random_range(30..60)),
            rng.random_range(600..5400),
        ),
        2 => (
            day + Duration::hours(23) + Duration::minutes(rng.random_range(40..60)),
            rng.random_range(600..3600),
        ),
        _ => (
            day + Duration::seconds(rng.random_range(0..86_400)),
            rng.random_range(5..3600),
        ),
    };
    let start = start + Duration::seconds(rng.random_range(0..60));
    (start, start + Duration::seconds(seconds))
}

/// Writes `calls` calls (2 records each) over two months to `out`, the same bytes for the same
/// `seed`.
pub fn write_sample(out: &Path, calls: usize, seed: u64) -> anyhow::Result<()> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_created_by("tinydevcrm sample".to_owned())
        .build();
    let mut writer = ArrowWriter::try_new(file, schema(), Some(properties))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let first_day = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .context("a fixed date")?;
    let mut call_id: i64 = 0;
    let mut remaining = calls;
    while remaining > 0 {
        let n = remaining.min(CALLS_PER_BATCH);
        remaining -= n;
        let mut record_id = Int64Builder::with_capacity(2 * n);
        let mut record_type = StringBuilder::with_capacity(2 * n, 10 * n);
        let mut timestamp = TimestampMicrosecondBuilder::with_capacity(2 * n).with_timezone("UTC");
        let mut call = Int64Builder::with_capacity(2 * n);
        let mut source = StringBuilder::with_capacity(2 * n, 22 * n);
        let mut destination = StringBuilder::with_capacity(2 * n, 22 * n);
        for _ in 0..n {
            call_id += 1;
            let (start, end) = call_times(&mut rng, first_day, 59);
            let (from, to) = (phone_number(&mut rng), phone_number(&mut rng));
            for (i, (kind, at)) in [("start", start), ("end", end)].into_iter().enumerate() {
                record_id.append_value(call_id * 2 - 1 + i64::try_from(i)?);
                record_type.append_value(kind);
                timestamp.append_value(at.timestamp_micros());
                call.append_value(call_id);
                if kind == "start" {
                    source.append_value(&from);
                    destination.append_value(&to);
                } else {
                    // End records carry no numbers in the billing seed's shape; keep them
                    // anyway, consistent with the start record, so every row is complete.
                    source.append_value(&from);
                    destination.append_value(&to);
                }
            }
        }
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(record_id.finish()),
                Arc::new(record_type.finish()),
                Arc::new(timestamp.finish()),
                Arc::new(call.finish()),
                Arc::new(source.finish()),
                Arc::new(destination.finish()),
            ],
        )?;
        writer.write(&batch)?;
    }
    writer.close()?;
    Ok(())
}

/// The SIM cards of the SIM-usage tutorial: two of organisation `x00g8`, one of `y11h9`.
pub const SIM_CARDS: [(&str, &str); 3] = [
    ("89440001", "x00g8"),
    ("89440002", "x00g8"),
    ("89440003", "y11h9"),
];

fn write_batch(out: &Path, batch: &RecordBatch) -> anyhow::Result<()> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let properties = WriterProperties::builder()
        .set_created_by("tinydevcrm sample".to_owned())
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(())
}

/// The SIM-usage tutorial's inventory: `sim_card_id` and `org_id` (text).
pub fn write_sim_inventory(out: &Path) -> anyhow::Result<()> {
    let batch = RecordBatch::try_from_iter(vec![
        (
            "sim_card_id",
            Arc::new(StringArray::from_iter_values(SIM_CARDS.iter().map(|c| c.0))) as _,
        ),
        (
            "org_id",
            Arc::new(StringArray::from_iter_values(SIM_CARDS.iter().map(|c| c.1))) as _,
        ),
    ])?;
    write_batch(out, &batch)
}

/// The SIM-usage tutorial's first usage rows: 48 hours from 2020-02-01 00:00 UTC, every SIM
/// using 100 bytes each quarter hour (`date` timestamptz, `bytes_used` bigint, `sim_card_id`).
pub fn write_sim_usage(out: &Path) -> anyhow::Result<()> {
    let start = Utc
        .with_ymd_and_hms(2020, 2, 1, 0, 0, 0)
        .single()
        .context("a fixed date")?
        .timestamp_micros();
    let mut dates = Vec::new();
    let mut sims = Vec::new();
    for quarter in 0..(48 * 4) {
        for (sim, _) in SIM_CARDS {
            dates.push(start + quarter * 15 * 60 * 1_000_000);
            sims.push(sim);
        }
    }
    let n = dates.len();
    let batch = RecordBatch::try_from_iter(vec![
        (
            "date",
            Arc::new(TimestampMicrosecondArray::from(dates).with_timezone("UTC")) as _,
        ),
        ("bytes_used", Arc::new(Int64Array::from(vec![100; n])) as _),
        ("sim_card_id", Arc::new(StringArray::from(sims)) as _),
    ])?;
    write_batch(out, &batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_writes_the_same_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
        write_sample(&a, 100, 7).expect("write a");
        write_sample(&b, 100, 7).expect("write b");
        assert_eq!(
            std::fs::read(a).expect("read a"),
            std::fs::read(b).expect("read b")
        );
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    /// The tutorial data under `docs/tutorials/data/` is what `tinydevcrm sample` writes; on a
    /// change here, regenerate it with the commands in `docs/tutorials/sim-usage.md`.
    #[test]
    fn the_shipped_tutorial_data_is_what_sample_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tutorials/data");
        for (name, write) in [
            (
                "inventory.parquet",
                write_sim_inventory as fn(&Path) -> anyhow::Result<()>,
            ),
            ("usage.parquet", write_sim_usage),
        ] {
            let fresh = dir.path().join(name);
            write(&fresh).expect("write");
            assert!(
                std::fs::read(&fresh).expect("read fresh")
                    == std::fs::read(data.join(name)).expect("read shipped"),
                "docs/tutorials/data/{name} differs from what `tinydevcrm sample` writes"
            );
        }
    }
}
