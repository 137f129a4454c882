//! Parquet files written by other tools (`../shared/parquet-testing`, see its WHY.md): each
//! file's outcome is pinned (loads with so many rows, or is refused with this code), values are
//! compared where the corpus gives them (`*_expect.csv`), and the server stays healthy after
//! every file.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, TestUser, spawn_app};

/// What a file must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 201 with this many rows.
    Loads(i64),
    /// A 4xx problem with this code.
    Refused(&'static str),
}
use Outcome::{Loads, Refused};

/// `data/`: every file, as this reader and converter handle it today. A change in any line is
/// a change in what users can load; update it on purpose.
const DATA: &[(&str, Outcome)] = &[
    ("alltypes_dictionary.parquet", Loads(2)),
    ("alltypes_plain.parquet", Loads(8)),
    ("alltypes_plain.snappy.parquet", Loads(2)),
    ("alltypes_tiny_pages.parquet", Loads(7300)),
    ("alltypes_tiny_pages_plain.parquet", Loads(7300)),
    ("binary.parquet", Loads(12)),
    ("binary_truncated_min_max.parquet", Loads(12)),
    ("byte_array_decimal.parquet", Loads(24)),
    ("byte_stream_split.zstd.parquet", Loads(300)),
    ("byte_stream_split_extended.gzip.parquet", Loads(200)),
    ("column_chunk_key_value_metadata.parquet", Loads(0)),
    ("concatenated_gzip_members.parquet", Loads(513)),
    ("data_index_bloom_encoding_stats.parquet", Loads(14)),
    ("data_index_bloom_encoding_with_length.parquet", Loads(14)),
    ("datapage_v1-corrupt-checksum.parquet", Loads(5120)),
    (
        "datapage_v1-snappy-compressed-checksum.parquet",
        Loads(5120),
    ),
    ("datapage_v1-uncompressed-checksum.parquet", Loads(5120)),
    ("datapage_v2.snappy.parquet", Loads(5)),
    ("datapage_v2_empty_datapage.snappy.parquet", Loads(1)),
    ("delta_binary_packed.parquet", Loads(200)),
    ("delta_byte_array.parquet", Loads(1000)),
    ("delta_encoding_optional_column.parquet", Loads(100)),
    ("delta_encoding_required_column.parquet", Loads(100)),
    ("delta_length_byte_array.parquet", Loads(1000)),
    ("dict-page-offset-zero.parquet", Refused("invalid_parquet")),
    (
        "encrypt_columns_and_footer.parquet.encrypted",
        Refused("unsupported_type"),
    ),
    (
        "encrypt_columns_and_footer_aad.parquet.encrypted",
        Refused("unsupported_type"),
    ),
    (
        "encrypt_columns_and_footer_bloom_filter.parquet.encrypted",
        Refused("unsupported_type"),
    ),
    (
        "encrypt_columns_and_footer_ctr.parquet.encrypted",
        Refused("unsupported_type"),
    ),
    (
        "encrypt_columns_and_footer_disable_aad_storage.parquet.encrypted",
        Refused("unsupported_type"),
    ),
    (
        "encrypt_columns_plaintext_footer.parquet.encrypted",
        Refused("invalid_parquet"),
    ),
    (
        "external_key_material_java.parquet.encrypted",
        Refused("unsupported_type"),
    ),
    ("fixed_length_byte_array.parquet", Loads(1000)),
    ("fixed_length_decimal.parquet", Loads(24)),
    ("fixed_length_decimal_legacy.parquet", Loads(24)),
    ("float16_nonzeros_and_nans.parquet", Loads(8)),
    ("float16_zeros_and_nans.parquet", Loads(3)),
    ("floating_orders_nan_count.parquet", Loads(50)),
    ("hadoop_lz4_compressed.parquet", Loads(4)),
    ("hadoop_lz4_compressed_larger.parquet", Loads(10000)),
    ("incorrect_map_schema.parquet", Loads(1)),
    ("int32_decimal.parquet", Loads(24)),
    ("int32_with_null_pages.parquet", Loads(1000)),
    ("int64_decimal.parquet", Loads(24)),
    ("int96_from_spark.parquet", Loads(6)),
    (
        "large_string_map.brotli.parquet",
        Refused("invalid_parquet"),
    ),
    ("list_columns.parquet", Loads(3)),
    ("lz4_raw_compressed.parquet", Loads(4)),
    ("lz4_raw_compressed_larger.parquet", Loads(10000)),
    ("map_no_value.parquet", Refused("invalid_value")),
    ("nan_in_stats.parquet", Loads(2)),
    ("nation.dict-malformed.parquet", Refused("invalid_parquet")),
    ("nested_lists.snappy.parquet", Loads(3)),
    ("nested_maps.snappy.parquet", Refused("invalid_value")),
    ("nested_structs.rust.parquet", Refused("invalid_value")),
    ("non_hadoop_lz4_compressed.parquet", Loads(4)),
    ("nonnullable.impala.parquet", Loads(1)),
    ("null_list.parquet", Loads(1)),
    ("nullable.impala.parquet", Loads(7)),
    ("nulls.snappy.parquet", Loads(8)),
    ("old_list_structure.parquet", Loads(1)),
    ("overflow_i16_page_cnt.parquet", Loads(40000)),
    ("page_v2_empty_compressed.parquet", Loads(10)),
    ("plain-dict-uncompressed-checksum.parquet", Loads(1000)),
    ("repeated_no_annotation.parquet", Loads(0)),
    ("repeated_primitive_no_list.parquet", Loads(4)),
    ("rle-dict-snappy-checksum.parquet", Loads(1000)),
    (
        "rle-dict-uncompressed-corrupt-checksum.parquet",
        Loads(1000),
    ),
    ("rle_boolean_encoding.parquet", Loads(68)),
    ("single_nan.parquet", Loads(1)),
    ("sort_columns.parquet", Loads(6)),
    (
        "uniform_encryption.parquet.encrypted",
        Refused("unsupported_type"),
    ),
    ("unknown-logical-type.parquet", Loads(3)),
];

/// `bad_data/`: files that crashed some reader.
const BAD_DATA: &[(&str, Outcome)] = &[
    ("ARROW-GH-41317.parquet", Refused("invalid_parquet")),
    ("ARROW-GH-41321.parquet", Refused("invalid_parquet")),
    // A dictionary page with RLE bit width 0 crashed Arrow C++; the Rust reader decodes it as
    // the single dictionary value, and the footer's row count agrees.
    ("ARROW-GH-43605.parquet", Loads(21186)),
    ("ARROW-GH-45185.parquet", Refused("invalid_parquet")),
    ("ARROW-GH-47662.parquet", Refused("invalid_parquet")),
    (
        "ARROW-RS-GH-6229-DICTHEADER.parquet",
        Refused("invalid_parquet"),
    ),
    (
        "ARROW-RS-GH-6229-LEVELS.parquet",
        Refused("invalid_parquet"),
    ),
    ("PARQUET-1481.parquet", Refused("invalid_parquet")),
];

/// The corpus, or `None` when this clone has no `../shared` beside it: a visible skip locally,
/// a failure in CI (`TDC_REQUIRE_PARQUET_TESTING=1`).
fn corpus() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/parquet-testing"
    ));
    if dir.join("data").is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("TDC_REQUIRE_PARQUET_TESTING").is_err(),
        "TDC_REQUIRE_PARQUET_TESTING is set but {} is missing",
        dir.display()
    );
    eprintln!(
        "SKIPPED: the Parquet corpus {} is absent; these tests checked nothing",
        dir.display()
    );
    None
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read corpus dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".parquet") || name.ends_with(".parquet.encrypted")
        })
        .collect();
    files.sort();
    files
}

/// Uploads every file of `dir` and checks its pinned outcome; returns the app, the user and
/// the table name of each file that loaded.
async fn upload_all(
    dir: &Path,
    pins: &[(&str, Outcome)],
) -> (TestApp, TestUser, Vec<(String, String)>) {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let files = files(dir);
    let names: Vec<String> = files
        .iter()
        .map(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let pinned: Vec<&str> = pins.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names, pinned,
        "the corpus and the pinned outcomes list different files"
    );
    let mut loaded = Vec::new();
    for (i, (path, (name, outcome))) in files.iter().zip(pins).enumerate() {
        let table = format!("f{i}");
        let bytes = std::fs::read(path).expect("read file");
        let res = app.create_table(&user.access, bytes, &table, None).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        match *outcome {
            Loads(rows) => {
                assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
                assert_eq!(body["row_count"], rows, "{name}: {body}");
                loaded.push(((*name).to_owned(), table));
            }
            Refused(code) => {
                assert!(status.is_client_error(), "{name}: {status} {body}");
                assert_eq!(body["code"], code, "{name}: {body}");
                let detail = body["detail"].as_str().unwrap_or_default();
                assert!(detail.len() > 10, "{name}: the refusal says why: {body}");
            }
        }
        assert_eq!(
            app.get("/health").await.status(),
            StatusCode::OK,
            "unhealthy after {name}"
        );
    }
    (app, user, loaded)
}

/// The rows of a CSV text, each a list of fields, sorted (row order is not part of the data).
fn sorted_rows(csv_text: &str) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = csv::Reader::from_reader(csv_text.as_bytes())
        .records()
        .map(|r| r.expect("a CSV record").iter().map(str::to_owned).collect())
        .collect();
    rows.sort();
    rows
}

#[tokio::test]
async fn every_file_written_by_another_tool_has_its_pinned_outcome_and_values() {
    let Some(dir) = corpus() else { return };

    let (app, user, loaded) = upload_all(&dir.join("data"), DATA).await;

    let mut compared = 0;
    for (name, table) in &loaded {
        let expect = dir
            .join("data")
            .join(name.replace(".parquet", "_expect.csv"));
        let Ok(expected) = std::fs::read_to_string(&expect) else {
            continue;
        };
        let res = app
            .get_as(&user.access, &format!("/tables/{table}/rows/?format=csv"))
            .await;
        assert_eq!(res.status(), StatusCode::OK, "{name}");
        let ours = res.text().await.expect("csv");
        assert_eq!(
            sorted_rows(&ours),
            sorted_rows(&expected),
            "{name}: the values differ from {}",
            expect.display()
        );
        compared += 1;
    }
    assert_eq!(
        compared, 4,
        "the corpus gives expected values for four files"
    );
}

#[tokio::test]
async fn files_known_to_crash_readers_have_their_pinned_outcome_and_the_server_survives() {
    let Some(dir) = corpus() else { return };

    let (_app, _user, loaded) = upload_all(&dir.join("bad_data"), BAD_DATA).await;

    assert_eq!(loaded.len(), 1);
}
