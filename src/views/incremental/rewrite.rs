//! The recompute query: the user's SQL with a range on the source column ([`rewrite`], a
//! proposal by a second parser), and the comparison of what PostgreSQL resolved it to with the
//! checked query ([`same_but_quals`]), which decides.

use sqlparser::ast::{Expr, SetExpr, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::tree::Node;
use super::{Catalog, Incremental, Refused, refuse, text_datum};

/// Names of the settings the recompute query reads its bounds from (set `LOCAL` by a refresh).
pub const FROM_SETTING: &str = "tinydevcrm.incremental_from";
/// See [`FROM_SETTING`].
pub const TO_SETTING: &str = "tinydevcrm.incremental_to";

/// An identifier in double quotes, as PostgreSQL reads it back unchanged (no case folding).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The user's query with `source >= from AND source < to` added to its top-level `WHERE`,
/// where `source` is the checked column itself, `"alias"."column"` (the name its table goes
/// by in `FROM` and the catalog's column name, both quoted), never an expression copied from
/// the select list (a second parser's idea of which output column is the bucket could differ
/// from PostgreSQL's: it folds only ASCII letters in names). The bounds are read from
/// [`FROM_SETTING`] and [`TO_SETTING`]. Only a proposal: PostgreSQL's resolution of the
/// result is compared with the original ([`same_but_quals`]).
pub fn rewrite(sql: &str, inc: &Incremental, alias: &str) -> Result<String, Refused> {
    let cannot = || {
        Refused(
            "the bucket must be computed in the top-level SELECT, named with AS in the select list"
                .to_owned(),
        )
    };
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|_| cannot())?;
    let [Statement::Query(query)] = statements.as_mut_slice() else {
        return Err(cannot());
    };
    if query.with.is_some() {
        return refuse("WITH (common table expressions) is not allowed in an incremental view");
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return refuse(
            "UNION, INTERSECT, EXCEPT and VALUES are not allowed in an incremental view",
        );
    };
    let source = format!("{}.{}", quoted(alias), quoted(&inc.source_column));
    let ty = if inc.with_time_zone {
        "pg_catalog.timestamptz"
    } else {
        "pg_catalog.timestamp"
    };
    let predicate = format!(
        "({source}) >= CAST(pg_catalog.current_setting('{FROM_SETTING}') AS {ty}) AND ({source}) < CAST(pg_catalog.current_setting('{TO_SETTING}') AS {ty})"
    );
    let predicate = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&predicate)
        .and_then(|mut p| p.parse_expr())
        .map_err(|_| cannot())?;
    select.selection = Some(match select.selection.take() {
        Some(old) => Expr::BinaryOp {
            left: Box::new(Expr::Nested(Box::new(old))),
            op: sqlparser::ast::BinaryOperator::And,
            right: Box::new(predicate),
        },
        None => predicate,
    });
    Ok(query.to_string())
}

/// The top-level `AND`'s arguments, or the condition itself.
fn conjuncts(quals: &Node) -> Vec<String> {
    if quals.label() == Some("BOOLEXPR") && quals.atom("boolop") == Some("and") {
        quals.list("args").iter().map(Node::canonical).collect()
    } else if matches!(quals, Node::Null) {
        Vec::new()
    } else {
        vec![quals.canonical()]
    }
}

/// A resolved query without its `old`/`new` placeholders (those of the view `relid`) and its
/// top-level `WHERE`, as canonical text, and that `WHERE`'s conditions.
fn without_quals(query: &Node, relid: u32) -> (String, Vec<String>) {
    let Node::Map { label, fields } = query else {
        return (String::new(), Vec::new());
    };
    let mut fields = fields.clone();
    let mut quals = Node::Null;
    for (name, value) in &mut fields {
        if name == "rtable"
            && let Node::List(items) = value
        {
            items.retain(|e| e.number("relid") != Some(i64::from(relid)));
        }
        if name == "jointree"
            && let Node::Map { fields: jf, .. } = value
        {
            for (jn, jv) in jf.iter_mut() {
                if jn == "quals" {
                    quals = std::mem::replace(jv, Node::Null);
                }
            }
        }
    }
    let rest = Node::Map {
        label: label.clone(),
        fields,
    };
    (rest.canonical(), conjuncts(&quals))
}

fn differs() -> Refused {
    Refused(
        "the recompute query did not resolve to the view's own query with a range on the source column; name the source column plainly (table.column) in the bucket expression"
            .to_owned(),
    )
}

/// The top-level `AND`'s arguments as nodes, or the condition itself.
fn conjunct_nodes(quals: &Node) -> Vec<&Node> {
    if quals.label() == Some("BOOLEXPR") && quals.atom("boolop") == Some("and") {
        quals.list("args").iter().collect()
    } else if matches!(quals, Node::Null) {
        Vec::new()
    } else {
        vec![quals]
    }
}

/// Whether `predicate` is exactly `source_var <op> CAST(pg_catalog.current_setting('<setting>')
/// AS <type>)`: the operator by id, the column by its resolved `Var`, the bound by function id
/// and constant; nothing else anywhere in it.
fn is_bound(
    predicate: &Node,
    op: u32,
    source_var: &str,
    setting: &str,
    ids: &Catalog,
    ty: i64,
) -> bool {
    let id = |n: &Node, f: &str| n.number(f).and_then(|v| u32::try_from(v).ok());
    if predicate.label() != Some("OPEXPR") || id(predicate, "opno") != Some(op) || op == 0 {
        return false;
    }
    let [var, bound] = predicate.list("args") else {
        return false;
    };
    if var.canonical() != source_var || bound.label() != Some("COERCEVIAIO") {
        return false;
    }
    if bound.number("resulttype") != Some(ty) {
        return false;
    }
    let call = bound.get("arg");
    if call.label() != Some("FUNCEXPR")
        || id(call, "funcid") != Some(ids.current_setting)
        || call.flag("funcretset")
    {
        return false;
    }
    let [name] = call.list("args") else {
        return false;
    };
    name.label() == Some("CONST")
        && !name.flag("constisnull")
        && name.number("consttype") == Some(25)
        && matches!(name.get("constvalue"), Node::Datum(bytes) if text_datum(bytes).as_deref() == Some(setting))
}

/// Whether `rewritten` (the resolved recompute query) is `original` with exactly two more
/// conditions in its top-level `WHERE`, `source >= <from setting>` and `source < <to
/// setting>` on the bucket's source column `source_var` (see [`is_bound`]), and nothing else
/// changed. The placeholders `old`/`new` of each view are left out.
pub fn same_but_quals(
    original: &Node,
    original_relid: u32,
    rewritten: &Node,
    rewritten_relid: u32,
    source_var: &str,
    with_time_zone: bool,
    ids: &Catalog,
) -> Result<(), Refused> {
    let (a_rest, a_conj) = without_quals(original, original_relid);
    let (b_rest, b_conj) = without_quals(rewritten, rewritten_relid);
    if a_rest != b_rest || b_conj.len() != a_conj.len() + 2 {
        return Err(differs());
    }
    // PostgreSQL flattens `(a AND b) AND c`: the original's conditions come first, in order.
    let (kept, _) = b_conj.split_at(a_conj.len());
    if kept != a_conj.as_slice() {
        return Err(differs());
    }
    let quals = rewritten.get("jointree").get("quals");
    let nodes = conjunct_nodes(quals);
    let [.., ge, lt] = nodes.as_slice() else {
        return Err(differs());
    };
    let ((op_ge, op_lt), ty) = if with_time_zone {
        (ids.ge_lt_tz, 1184)
    } else {
        (ids.ge_lt, 1114)
    };
    if !is_bound(ge, op_ge, source_var, FROM_SETTING, ids, ty)
        || !is_bound(lt, op_lt, source_var, TO_SETTING, ids, ty)
    {
        return Err(differs());
    }
    Ok(())
}

/// Whether `other` resolved to exactly `original` (placeholders aside).
pub fn same_but_quals_exact(
    original: &Node,
    original_relid: u32,
    other: &Node,
    other_relid: u32,
) -> Result<(), Refused> {
    if without_quals(original, original_relid) == without_quals(other, other_relid) {
        Ok(())
    } else {
        Err(differs())
    }
}
