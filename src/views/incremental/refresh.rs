//! A refresh of an incremental view: full (delete everything, insert the whole query) or
//! incremental (delete the touched buckets, insert them recomputed from the source rows in
//! range), in one transaction as the tenant, with the session `TimeZone` fixed to UTC in both
//! so a bucket of a `timestamptz` never depends on a connection's setting.

use chrono::NaiveDateTime;
use sqlx::{PgConnection, QueryBuilder};

use super::store::{self, Pending};
use super::{Bucket, FROM_SETTING, Incremental, TO_SETTING, UNITS};
pub use crate::channels::events::{BucketRange, Mode};
use crate::db::ident::{ColumnIdent, Ident};

/// What the pending changes ask of a refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Recompute everything.
    Full,
    /// Recompute the buckets of source values in this range (inclusive); `None`: no bucket
    /// changed (empty appends).
    Buckets(Option<(NaiveDateTime, NaiveDateTime)>),
}

/// Decides from the pending changes: incremental only when every change since the last
/// refresh left a bounded range (`changes` counts them; one not recorded, e.g. by an older
/// process, makes the count differ), full otherwise and for the first fill.
pub fn work(refreshed_changes: Option<i64>, changes: i64, pending: &[Pending]) -> Work {
    let accounted = i64::try_from(pending.len()).unwrap_or(i64::MAX);
    match refreshed_changes {
        Some(done)
            if done.checked_add(accounted) == Some(changes)
                && !pending.iter().any(|p| p.full_refresh) =>
        {
            let from = pending.iter().filter_map(|p| p.range_from).min();
            let to = pending.iter().filter_map(|p| p.range_to).max();
            Work::Buckets(from.zip(to))
        }
        _ => Work::Full,
    }
}

fn bucket_type(inc: &Incremental) -> &'static str {
    if inc.with_time_zone {
        "pg_catalog.timestamptz"
    } else {
        "pg_catalog.timestamp"
    }
}

/// The first and last bucket of the source range, and a range of source values that holds
/// every row of those buckets (one bucket wider each side: a day in a zone with daylight
/// saving is 23 to 25 hours).
async fn bounds(
    conn: &mut PgConnection,
    inc: &Incremental,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<(String, String, String, String), sqlx::Error> {
    let value = |p: &str| {
        if inc.with_time_zone {
            format!("({p}::pg_catalog.timestamp AT TIME ZONE 'UTC')")
        } else {
            format!("{p}::pg_catalog.timestamp")
        }
    };
    let origin = if inc.with_time_zone {
        "((TIMESTAMP '2000-01-01' + $6::int8 * INTERVAL '1 microsecond') AT TIME ZONE 'UTC')"
    } else {
        "(TIMESTAMP '2000-01-01' + $6::int8 * INTERVAL '1 microsecond')"
    };
    let bucket = |p: &str| match &inc.bucket {
        Bucket::DateTrunc { zone: None, .. } => format!("pg_catalog.date_trunc($3, {})", value(p)),
        Bucket::DateTrunc { zone: Some(_), .. } => {
            format!("pg_catalog.date_trunc($3, {}, $4)", value(p))
        }
        Bucket::DateBin { .. } => {
            format!("pg_catalog.date_bin($5::interval, {}, {origin})", value(p))
        }
    };
    let (unit, zone, stride, origin_us, width) = match &inc.bucket {
        Bucket::DateTrunc { unit, zone } => {
            let width = UNITS
                .iter()
                .find(|(u, _)| u == unit)
                .map_or("1 day", |(_, w)| *w);
            (
                unit.clone(),
                zone.clone(),
                String::new(),
                0,
                width.to_owned(),
            )
        }
        Bucket::DateBin {
            stride_us,
            origin_us,
        } => {
            let stride = format!("{stride_us} microseconds");
            (String::new(), None, stride.clone(), *origin_us, stride)
        }
    };
    let sql = format!(
        "SELECT b_lo::text, b_hi::text, (b_lo - w)::text, (b_hi + w + w)::text
         FROM (SELECT {} AS b_lo, {} AS b_hi, $7::interval AS w) s",
        bucket("$1"),
        bucket("$2")
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(from)
        .bind(to)
        .bind(unit)
        .bind(zone)
        .bind(stride)
        .bind(origin_us)
        .bind(width)
        .fetch_one(conn)
        .await
}

/// Whether PostgreSQL's own timestamp output can be written as a literal in `SET`, which
/// takes no parameters (and tenants may not call `set_config`): digits and separators only,
/// so no quote and no `BC` era, which the range's type cast would read differently.
fn plain_timestamp(v: &str) -> bool {
    !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || " -:.+".contains(c))
}

/// [`bounds`], or `None` when they cannot be used: PostgreSQL could not compute them (a
/// source value near the end of its range: a data exception, undone by a savepoint) or one
/// is not a [`plain_timestamp`] (BC).
async fn usable_bounds(
    conn: &mut PgConnection,
    inc: &Incremental,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<Option<(String, String, String, String)>, sqlx::Error> {
    sqlx::query("SAVEPOINT incremental_bounds")
        .execute(&mut *conn)
        .await?;
    match bounds(conn, inc, from, to).await {
        Ok(found) => {
            sqlx::query("RELEASE SAVEPOINT incremental_bounds")
                .execute(&mut *conn)
                .await?;
            let (a, b, c, d) = &found;
            Ok([a, b, c, d]
                .iter()
                .all(|v| plain_timestamp(v))
                .then_some(found))
        }
        Err(sqlx::Error::Database(db)) if db.code().is_some_and(|c| c.starts_with("22")) => {
            sqlx::query("ROLLBACK TO SAVEPOINT incremental_bounds")
                .execute(&mut *conn)
                .await?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// One refresh of a view at a time: two would each insert the buckets the other deleted.
/// Readers (ACCESS SHARE) are not blocked. Taken first in the refresh's `REPEATABLE READ`
/// transaction, before its snapshot, so the snapshot includes every earlier refresh.
pub async fn lock(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
) -> Result<(), sqlx::Error> {
    let mut lock = QueryBuilder::new("LOCK TABLE ");
    lock.push(schema)
        .push(".")
        .push(name)
        .push(" IN SHARE ROW EXCLUSIVE MODE");
    lock.build().execute(&mut *conn).await?;
    Ok(())
}

/// Buckets `from` to `to`, inclusive, of the view's bucket column (of type `ty`).
struct Within<'a> {
    bucket: &'a ColumnIdent,
    from: &'a str,
    to: &'a str,
    ty: &'static str,
}

impl Within<'_> {
    fn push(&self, query: &mut QueryBuilder<sqlx::Postgres>) {
        let ty = self.ty;
        query.push(" WHERE ").push(self.bucket).push(" >= CAST(");
        query.push_bind(self.from.to_owned());
        query.push(format!(" AS {ty}) AND ")).push(self.bucket);
        query.push(" <= CAST(").push_bind(self.to.to_owned());
        query.push(format!(" AS {ty})"));
    }
}

/// Deletes the view table's rows (within some buckets, or all) and inserts them again from
/// `source` (one of its two definitions): rows deleted and inserted.
async fn replace_rows(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
    source: &Ident,
    within: Option<Within<'_>>,
) -> Result<(u64, u64), sqlx::Error> {
    let mut delete = QueryBuilder::new("DELETE FROM ");
    delete.push(schema).push(".").push(name);
    let mut insert = QueryBuilder::new("INSERT INTO ");
    insert.push(schema).push(".").push(name);
    insert
        .push(" SELECT * FROM ")
        .push(schema)
        .push(".")
        .push(source);
    if let Some(within) = &within {
        within.push(&mut delete);
        within.push(&mut insert);
    }
    let deleted = delete.build().execute(&mut *conn).await?.rows_affected();
    let inserted = insert.build().execute(&mut *conn).await?.rows_affected();
    Ok((deleted, inserted))
}

/// What a refresh of an incremental view did.
#[derive(Debug)]
pub struct Recomputed {
    /// Full, or only some buckets.
    pub mode: Mode,
    /// The buckets recomputed, when some were.
    pub buckets: Option<BucketRange>,
    /// Rows inserted minus rows deleted when only buckets were recomputed: the view's row
    /// count follows from the last one without counting the whole table again.
    pub rows_delta: Option<i64>,
}

/// Runs `work` on the view's table as the tenant (the caller's tenant transaction, holding
/// [`lock`]).
pub async fn run(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
    view_id: uuid::Uuid,
    inc: &Incremental,
    work: &Work,
) -> Result<Recomputed, sqlx::Error> {
    sqlx::query("SET LOCAL TimeZone = 'UTC'")
        .execute(&mut *conn)
        .await?;
    let (full, range) = store::definitions(view_id);
    let bucket = ColumnIdent::new(inc.bucket_column.clone())
        .map_err(|e| sqlx::Error::Protocol(format!("BUG: stored bucket column: {e}")))?;
    match work {
        Work::Full => {
            replace_rows(conn, schema, name, &full, None).await?;
            Ok(Recomputed {
                mode: Mode::Full,
                buckets: None,
                rows_delta: None,
            })
        }
        Work::Buckets(None) => Ok(Recomputed {
            mode: Mode::Incremental,
            buckets: None,
            rows_delta: Some(0),
        }),
        Work::Buckets(Some((from, to))) => {
            // Bounds PostgreSQL cannot compute (past its range) or that are BC (which no
            // literal below may hold): the whole view is recomputed instead, never an error.
            let Some((b_lo, b_hi, src_from, src_to)) = usable_bounds(conn, inc, *from, *to).await?
            else {
                return Box::pin(run(conn, schema, name, view_id, inc, &Work::Full)).await;
            };
            let set = format!(
                "SET LOCAL \"{FROM_SETTING}\" = '{src_from}'; SET LOCAL \"{TO_SETTING}\" = '{src_to}'"
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(set))
                .execute(&mut *conn)
                .await?;
            let within = Within {
                bucket: &bucket,
                from: &b_lo,
                to: &b_hi,
                ty: bucket_type(inc),
            };
            let (deleted, inserted) =
                replace_rows(conn, schema, name, &range, Some(within)).await?;
            let delta = i64::try_from(inserted)
                .ok()
                .zip(i64::try_from(deleted).ok())
                .and_then(|(i, d)| i.checked_sub(d));
            Ok(Recomputed {
                mode: Mode::Incremental,
                buckets: Some(BucketRange {
                    from: b_lo,
                    to: b_hi,
                }),
                rows_delta: delta,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hour: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
            .and_then(|d| d.and_hms_opt(hour, 0, 0))
            .expect("a time")
    }

    fn pending(id: i64, range: Option<(u32, u32)>, full: bool) -> Pending {
        Pending {
            pending_id: id,
            range_from: range.map(|r| at(r.0)),
            range_to: range.map(|r| at(r.1)),
            full_refresh: full,
        }
    }

    #[test]
    fn ranges_merge_and_anything_unbounded_or_unaccounted_is_full() {
        let two = [
            pending(1, Some((5, 6)), false),
            pending(2, Some((1, 2)), false),
        ];
        assert_eq!(
            work(Some(10), 12, &two),
            Work::Buckets(Some((at(1), at(6))))
        );
        // An empty append: nothing to recompute.
        assert_eq!(
            work(Some(10), 11, &[pending(3, None, false)]),
            Work::Buckets(None)
        );
        // A change without a pending row (counts differ), a replace, the first fill.
        assert_eq!(work(Some(10), 13, &two), Work::Full);
        assert_eq!(
            work(Some(10), 12, &[two[0].clone(), pending(4, None, true)]),
            Work::Full
        );
        assert_eq!(work(None, 2, &two), Work::Full);
    }
}
