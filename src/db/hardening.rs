//! Which of `harden.sql`'s protections are in force in this database, asked of PostgreSQL at
//! start. A tenant role inherits nothing and belongs to no role, so what it may do is exactly
//! what `PUBLIC` may do: each check asks whether `PUBLIC` still holds a privilege the hardening
//! takes away. On a managed PostgreSQL (Amazon RDS and the like) the administrator is not a
//! superuser and `harden.sql` can take away only part of it (docs/OPERATIONS.md); tenant
//! isolation then rests on the view checker alone, which holds by itself (the attack tests run
//! against such a database too), and the operator should know.

use sqlx::PgPool;

/// One protection and whether it is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// Short name, also the `check` label of the `tdc_hardening` gauge.
    pub name: &'static str,
    /// What a tenant could do without it.
    pub risk: &'static str,
    /// `PUBLIC` (so any tenant role) no longer holds the privilege.
    pub in_force: bool,
}

/// Every check, in a fixed order: (name, what a tenant could do without it, the SQL condition
/// that is true when `PUBLIC` still holds the privilege).
const CHECKS: &[(&str, &str, &str)] = &[
    (
        "database_connect",
        "connect to this database (a tenant role cannot log in; this is a second lock)",
        "has_database_privilege('public', current_database(), 'CONNECT')",
    ),
    (
        "public_schema",
        "create objects in the public schema",
        "has_schema_privilege('public', 'public', 'CREATE')",
    ),
    (
        "catalogs",
        "read the catalogs: other tenants' schema, table and view names",
        "has_table_privilege('public', 'pg_catalog.pg_class', 'SELECT')",
    ),
    (
        "set_config",
        "change its own settings with set_config",
        "has_function_privilege('public', 'pg_catalog.set_config(text, text, boolean)', 'EXECUTE')",
    ),
    (
        "pg_notify",
        "send notifications on the service's channels",
        "has_function_privilege('public', 'pg_catalog.pg_notify(text, text)', 'EXECUTE')",
    ),
    (
        "large_objects",
        "create and read large objects",
        "EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                  WHERE p.pronamespace = 'pg_catalog'::regnamespace
                    AND (p.proname LIKE 'lo\\_%' OR p.proname IN ('loread', 'lowrite'))
                    AND has_function_privilege('public', p.oid, 'EXECUTE'))",
    ),
    (
        "object_definitions",
        "read other objects' definitions (pg_get_viewdef and the like)",
        "EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                  WHERE p.pronamespace = 'pg_catalog'::regnamespace
                    AND p.proname IN ('pg_get_viewdef', 'pg_get_ruledef', 'pg_get_functiondef',
                                      'pg_get_triggerdef', 'pg_get_indexdef', 'pg_get_constraintdef')
                    AND has_function_privilege('public', p.oid, 'EXECUTE'))",
    ),
    (
        "xml_exports",
        "export tables and schemas as XML (table_to_xml and the like)",
        "EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                  WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname LIKE '%\\_to\\_xml%'
                    AND has_function_privilege('public', p.oid, 'EXECUTE'))",
    ),
    (
        "advisory_locks",
        "take advisory locks that outlive a transaction on a pooled connection",
        "EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                  WHERE p.pronamespace = 'pg_catalog'::regnamespace
                    AND (p.proname LIKE 'pg\\_advisory%' OR p.proname LIKE 'pg\\_try\\_advisory%')
                    AND has_function_privilege('public', p.oid, 'EXECUTE'))",
    ),
    (
        "signal_backends",
        "cancel or terminate sessions (its own role's)",
        "EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                  WHERE p.pronamespace = 'pg_catalog'::regnamespace
                    AND p.proname IN ('pg_terminate_backend', 'pg_cancel_backend')
                    AND has_function_privilege('public', p.oid, 'EXECUTE'))",
    ),
];

/// Asks PostgreSQL which protections are in force (one statement).
pub async fn checks(pool: &PgPool) -> Result<Vec<Check>, sqlx::Error> {
    let conditions: Vec<String> = CHECKS
        .iter()
        .map(|(_, _, held)| format!("NOT ({held})"))
        .collect();
    let sql = format!("SELECT ARRAY[{}]", conditions.join(", "));
    // Only constants of this file make up the statement.
    let in_force: Vec<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await?;
    Ok(CHECKS
        .iter()
        .zip(in_force)
        .map(|(&(name, risk, _), in_force)| Check {
            name,
            risk,
            in_force,
        })
        .collect())
}

/// Logs what is and is not in force, and sets the `tdc_hardening{check}` gauges (1 in force,
/// 0 not) for dashboards and alerts.
pub fn report(checks: &[Check]) {
    for check in checks {
        metrics::gauge!("tdc_hardening", "check" => check.name).set(if check.in_force {
            1.0
        } else {
            0.0
        });
    }
    let missing: Vec<&Check> = checks.iter().filter(|c| !c.in_force).collect();
    if missing.is_empty() {
        tracing::info!(
            checks = checks.len(),
            "database hardening in force: every check"
        );
        return;
    }
    for check in &missing {
        tracing::warn!(
            check = check.name,
            "database hardening not in force: a tenant role may {}",
            check.risk
        );
    }
    tracing::warn!(
        missing = missing.len(),
        of = checks.len(),
        "tenant isolation rests on the view checker for what the hardening does not cover; run src/db/harden.sql as a superuser where you can (docs/OPERATIONS.md, \"A managed PostgreSQL\")"
    );
}
