//! The statement classes SQLite's authorizer cannot see — DELETE and UPDATE without a
//! WHERE clause, VACUUM, VACUUM INTO — decided from a parse of the statement (sqlparser's
//! SQLite dialect), wherever the statement sits: first, after `WITH`, behind comments,
//! inside a trigger body. A statement the parser cannot read is refused when it holds
//! one of those keywords and a rule depends on them; without them it cannot be one of
//! those classes, and SQLite and the authorizer decide the rest.

use std::ops::ControlFlow;

use sqlparser::ast::{visit_statements, Statement};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::{LockdownRules, StatementClass};

/// What a statement holds, of the classes decided here.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// A DELETE without WHERE.
    pub delete_without_where: bool,
    /// An UPDATE without WHERE.
    pub update_without_where: bool,
    /// A VACUUM.
    pub vacuum: bool,
}

/// The unquoted keywords of `sql`, as SQLite's dialect tokenizes it.
fn keywords(sql: &str) -> Vec<Keyword> {
    Tokenizer::new(&SQLiteDialect {}, sql)
        .tokenize()
        .unwrap_or_default()
        .iter()
        .filter_map(|t| match t {
            Token::Word(w) if w.quote_style.is_none() => Some(w.keyword),
            _ => None,
        })
        .collect()
}

/// Whether `sql` may hold `word` (lowercase ASCII letters) as a keyword: an ASCII
/// case-insensitive search, a filter that only skips the parse when the word appears
/// nowhere. It runs on every tenant statement, so it jumps between first letters.
fn mentions(sql: &str, word: &str) -> bool {
    let (hay, needle) = (sql.as_bytes(), word.as_bytes());
    let Some(&first) = needle.first() else {
        return true;
    };
    memchr::memchr2_iter(first, first.to_ascii_uppercase(), hay).any(|i| {
        hay.get(i..i + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(needle))
    })
}

/// The classes in `sql`, from its parse; `Err` with the keywords its tokens hold when
/// it does not parse.
pub fn classify(sql: &str) -> Result<Found, Vec<Keyword>> {
    let dialect = SQLiteDialect {};
    let statements = match Parser::parse_sql(&dialect, sql) {
        Ok(s) => s,
        Err(_) => return Err(keywords(sql)),
    };
    let mut found = Found::default();
    let _ = visit_statements(&statements, |s| {
        match s {
            Statement::Delete(d) if d.selection.is_none() => found.delete_without_where = true,
            Statement::Update(u) if u.selection.is_none() => found.update_without_where = true,
            Statement::Vacuum(_) => found.vacuum = true,
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(found)
}

/// The refusal of `sql` under `rules`, if any.
pub fn refusal(rules: &LockdownRules, sql: &str) -> Option<String> {
    let disabled = |c: StatementClass| rules.disabled_statements.contains(&c);
    let watch_delete = disabled(StatementClass::DeleteWithoutWhere) && mentions(sql, "delete");
    let watch_update = disabled(StatementClass::UpdateWithoutWhere) && mentions(sql, "update");
    // VACUUM INTO is refused whatever the profile.
    let watch_vacuum = mentions(sql, "vacuum");
    if !(watch_delete || watch_update || watch_vacuum) {
        return None;
    }
    if watch_vacuum {
        // Whether or not the parser reads VACUUM INTO (this version does not), a statement
        // with both keywords is refused.
        let words = keywords(sql);
        if words.contains(&Keyword::VACUUM) && words.contains(&Keyword::INTO) {
            return Some("VACUUM INTO is never allowed to tenants".into());
        }
    }
    let found = match classify(sql) {
        Ok(f) => f,
        Err(keywords) => {
            let has = |k: Keyword| keywords.contains(&k);
            let unreadable = (watch_delete && has(Keyword::DELETE))
                || (watch_update && has(Keyword::UPDATE))
                || (disabled(StatementClass::Vacuum) && has(Keyword::VACUUM));
            return unreadable.then(|| {
                "the statement could not be analysed for the lockdown profile's rules on DELETE, UPDATE and VACUUM; write it more plainly".to_string()
            });
        }
    };
    if found.vacuum && disabled(StatementClass::Vacuum) {
        return Some("VACUUM is disabled by the lockdown profile".into());
    }
    if found.delete_without_where && disabled(StatementClass::DeleteWithoutWhere) {
        return Some("DELETE without WHERE is disabled by the lockdown profile".into());
    }
    if found.update_without_where && disabled(StatementClass::UpdateWithoutWhere) {
        return Some("UPDATE without WHERE is disabled by the lockdown profile".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(classes: &[StatementClass]) -> LockdownRules {
        LockdownRules {
            disabled_statements: classes.iter().copied().collect(),
            ..Default::default()
        }
    }

    const DELETES_EVERYTHING: &[&str] = &[
        "DELETE FROM t",
        "delete from t",
        "WITH c AS (SELECT 1) DELETE FROM t",
        "with recursive c(x) as (select 1) delete from t returning *",
        "/* where */ DELETE FROM t -- WHERE id = 1",
        "  \n\tDeLeTe\n  FROM\t\"t\"  ",
        "DELETE FROM main.t RETURNING id, 'where'",
        "DELETE FROM [t];",
        "WITH a AS (SELECT 1), b AS (SELECT 2) DELETE FROM t",
        "CREATE TRIGGER tr AFTER INSERT ON u BEGIN DELETE FROM t; END",
        "DELETE FROM t LIMIT 5",
    ];

    const DELETES_SOME: &[&str] = &[
        "DELETE FROM t WHERE id = 1",
        "WITH c AS (SELECT 1) DELETE FROM t WHERE id IN (SELECT * FROM c)",
        "delete from t where 1 returning *",
        "/* x */ DELETE /* y */ FROM t /* z */ WHERE x = 'DELETE FROM t'",
        "SELECT 'DELETE FROM t'",
        "INSERT INTO log VALUES ('delete everything')",
        "  dElEtE  fRoM  t  wHeRe  x  ",
        "DELETE FROM t WHERE rowid = (SELECT max(rowid) FROM t) RETURNING *",
        "CREATE TRIGGER tr AFTER INSERT ON u BEGIN DELETE FROM t WHERE t.id = new.id; END",
        "DELETE FROM t INDEXED BY i WHERE x = 1",
    ];

    const UPDATES_EVERYTHING: &[&str] = &[
        "UPDATE t SET x = 'z'",
        "WITH c AS (SELECT 1) UPDATE t SET x = 'z'",
        "update t set x = 1 returning *",
        "/* where */ UPDATE t SET x = 1 -- WHERE id = 1",
        "UPDATE OR REPLACE t SET x = 1",
        "  uPdAtE\n t\n SET x = x + 1 ",
        "UPDATE t SET (a, b) = (1, 2)",
        "WITH RECURSIVE n(x) AS (SELECT 1) UPDATE t SET x = (SELECT x FROM n)",
        "CREATE TRIGGER tr AFTER INSERT ON u BEGIN UPDATE t SET x = 0; END",
        "UPDATE t SET x = 'WHERE'",
    ];

    const UPDATES_SOME: &[&str] = &[
        "UPDATE t SET x = 'z' WHERE id = 1",
        "WITH c AS (SELECT 1) UPDATE t SET x = 'z' WHERE id = 2",
        "update t set x = 1 where y returning *",
        "/* update */ SELECT 1",
        "SELECT 'UPDATE t SET x = 1'",
        "INSERT INTO t VALUES (1) ON CONFLICT(x) DO UPDATE SET y = 2",
        "UPDATE t SET x = 1 FROM u WHERE t.id = u.id",
        "  UpDaTe t SeT x = 2 wHeRe id = 3 ",
        "CREATE TRIGGER tr AFTER INSERT ON u BEGIN UPDATE t SET x = 0 WHERE id = new.id; END",
        "UPDATE t SET x = 1 WHERE id = 1 RETURNING *",
    ];

    #[test]
    fn delete_without_where_is_found_wherever_it_is() {
        let r = rules(&[StatementClass::DeleteWithoutWhere]);
        for sql in DELETES_EVERYTHING {
            assert!(refusal(&r, sql).is_some(), "must refuse: {sql}");
        }
        for sql in DELETES_SOME {
            assert!(refusal(&r, sql).is_none(), "must allow: {sql}");
        }
        assert!(refusal(
            &LockdownRules::default(),
            "WITH c AS (SELECT 1) DELETE FROM t"
        )
        .is_none());
    }

    #[test]
    fn update_without_where_is_found_wherever_it_is() {
        let r = rules(&[StatementClass::UpdateWithoutWhere]);
        for sql in UPDATES_EVERYTHING {
            assert!(refusal(&r, sql).is_some(), "must refuse: {sql}");
        }
        for sql in UPDATES_SOME {
            assert!(refusal(&r, sql).is_none(), "must allow: {sql}");
        }
    }

    #[test]
    fn vacuum_and_vacuum_into() {
        let none = LockdownRules::default();
        for sql in [
            "VACUUM INTO '/tmp/x'",
            "vacuum main into 'x.db'",
            "/* */ VACUUM INTO 'x'",
        ] {
            assert!(refusal(&none, sql).is_some(), "always: {sql}");
        }
        assert!(refusal(&none, "VACUUM").is_none());
        let r = rules(&[StatementClass::Vacuum]);
        assert!(refusal(&r, "  vacuum ").is_some());
        assert!(refusal(&r, "SELECT * FROM vacuum_log").is_none());
        assert!(
            refusal(&r, "PRAGMA table_info(vacuum_log)").is_none(),
            "unparsed, but no VACUUM keyword"
        );
    }

    #[test]
    fn mentions_is_case_insensitive_and_whole() {
        assert!(mentions("select 1; VaCuUm", "vacuum"));
        assert!(mentions("vacuum", "vacuum"));
        assert!(!mentions("SELECT v FROM vacuu", "vacuum"));
        assert!(!mentions("", "delete"));
    }

    #[test]
    fn an_unreadable_statement_with_a_watched_keyword_is_refused() {
        let r = rules(&[StatementClass::DeleteWithoutWhere]);
        assert!(refusal(&r, "DELETE FROM t WHERE").is_some());
        assert!(refusal(&r, "PRAGMA table_info(t)").is_none());
    }
}
