//! The one write path of configuration resources (APIs, policies, certificates, ...). Each kind
//! is described by a [`Kind`]: its table, columns, change kind and tags. The transaction, the row
//! lock that keeps `prev_tags` exact, the change-log entry and the revision stamp live here only,
//! so every kind streams the same way (docs/architecture.md, "Resource kinds").
//!
//! SQL identifiers come only from a kind's constants, never from a request; values are bound.

use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::StoreError;
use super::changelog::{ChangeKind, NewChange, commit_change};

/// The tags of a resource every node group receives.
pub(super) const EVERY_GROUP: &[String] = &[];

/// A text column stored next to the body, so that SQL (a uniqueness constraint, a filter) can
/// see it without reading the body.
pub(super) struct Column<R: 'static> {
    pub name: &'static str,
    pub value: fn(&R) -> &str,
}

/// Where a stored row keeps its node-segmentation tags: the `prev_tags` of the next change.
pub(super) enum RowTags {
    /// The kind reaches every group (policies: keys of any group may reference them).
    EveryGroup,
    /// A `text[]` column, written from [`Kind::tags`].
    Column(&'static str),
    /// Inside the body; the function reads them from a stored body.
    Body(fn(Value) -> Result<Vec<String>, StoreError>),
}

/// What the shared path needs to know of one kind.
pub(super) trait Kind {
    /// The typed value a write takes.
    type Record: 'static;
    const TABLE: &'static str;
    const ID_COLUMN: &'static str;
    /// The `jsonb` column holding the resource as streamed.
    const BODY_COLUMN: &'static str;
    const CHANGE: ChangeKind;
    const TAGS: RowTags;
    /// Text columns besides id, body, tags and revision.
    const COLUMNS: &'static [Column<Self::Record>] = &[];
    /// A column `list` can narrow on (certificates: `org_id`).
    const SCOPE_COLUMN: Option<&'static str> = None;
    /// Set to `now()` on replace, when the table has one.
    const UPDATED_AT_COLUMN: Option<&'static str> = Some("updated_at");

    fn id(record: &Self::Record) -> &str;
    fn body(record: &Self::Record) -> Result<Value, StoreError>;
    /// Tags after a write; not read for [`RowTags::EveryGroup`] kinds.
    fn tags(_record: &Self::Record) -> &[String] {
        EVERY_GROUP
    }
    /// The refusal of a create whose id exists.
    fn duplicate_id(id: &str) -> StoreError;
    /// The refusal for a broken uniqueness constraint other than the id's, by constraint name.
    fn unique_violation(_constraint: &str) -> Option<StoreError> {
        None
    }
}

fn change_tags<K: Kind>(record: &K::Record) -> &[String] {
    match K::TAGS {
        RowTags::EveryGroup => EVERY_GROUP,
        RowTags::Column(_) | RowTags::Body(_) => K::tags(record),
    }
}

/// The column a lock or delete returns so that [`row_tags`] can read the previous tags.
fn tags_source<K: Kind>() -> &'static str {
    match K::TAGS {
        // Only the row's existence matters.
        RowTags::EveryGroup => K::ID_COLUMN,
        RowTags::Column(column) => column,
        RowTags::Body(_) => K::BODY_COLUMN,
    }
}

fn row_tags<K: Kind>(row: &PgRow) -> Result<Vec<String>, StoreError> {
    match K::TAGS {
        RowTags::EveryGroup => Ok(Vec::new()),
        RowTags::Column(_) => Ok(row.try_get(0)?),
        RowTags::Body(read) => read(row.try_get(0)?),
    }
}

fn map_unique<K: Kind>(e: sqlx::Error) -> StoreError {
    let mapped = e
        .as_database_error()
        .and_then(|d| d.constraint())
        .and_then(K::unique_violation);
    mapped.unwrap_or(StoreError::Database(e))
}

/// Every column a write sets from the record, in bind order after the id.
fn written_columns<K: Kind>() -> Vec<&'static str> {
    let mut columns = vec![K::BODY_COLUMN];
    columns.extend(K::COLUMNS.iter().map(|c| c.name));
    if let RowTags::Column(column) = K::TAGS {
        columns.push(column);
    }
    columns
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds the values of [`written_columns`], in the same order.
fn bind_written<'q, K: Kind>(
    query: PgQuery<'q>,
    record: &'q K::Record,
    body: &'q Value,
) -> PgQuery<'q> {
    let mut query = query.bind(body);
    for column in K::COLUMNS {
        query = query.bind((column.value)(record));
    }
    if let RowTags::Column(_) = K::TAGS {
        query = query.bind(K::tags(record));
    }
    query
}

/// A row written inside a transaction whose change-log entry is still to be taken: the
/// revision counter is locked only by [`Pending::log`], so a transaction of many writes (a
/// configuration apply) can take it after all its row locks, in the order every single write
/// takes them (row, then counter); the other order deadlocks against a concurrent write.
#[must_use = "a written row without its change-log entry never reaches the edges"]
pub(super) struct Pending {
    kind: ChangeKind,
    table: &'static str,
    id_column: &'static str,
    id: String,
    body: Option<Value>,
    tags: Option<Vec<String>>,
    prev_tags: Option<Vec<String>>,
}

impl Pending {
    fn of<K: Kind>(
        id: &str,
        body: Option<Value>,
        tags: Option<&[String]>,
        prev_tags: Option<Vec<String>>,
    ) -> Self {
        Self {
            kind: K::CHANGE,
            table: K::TABLE,
            id_column: K::ID_COLUMN,
            id: id.to_owned(),
            body,
            tags: tags.map(<[String]>::to_vec),
            prev_tags,
        }
    }

    /// Records the change and stamps the row (unless deleted) with its revision; the caller
    /// commits.
    pub(super) async fn log(&self, tx: &mut Tx<'_>) -> Result<i64, StoreError> {
        let revision = commit_change(
            tx,
            NewChange {
                kind: self.kind,
                resource_id: &self.id,
                body: self.body.as_ref(),
                tags: self.tags.as_deref(),
                prev_tags: self.prev_tags.as_deref(),
            },
        )
        .await?;
        if self.body.is_some() {
            sqlx::query(&format!(
                "UPDATE {} SET revision = $2 WHERE {} = $1",
                self.table, self.id_column
            ))
            .bind(&self.id)
            .bind(revision)
            .execute(&mut **tx)
            .await?;
        }
        Ok(revision)
    }
}

pub(super) type Tx<'c> = sqlx::Transaction<'c, sqlx::Postgres>;

/// The stored body of `id`.
pub(super) async fn get<K: Kind>(pool: &PgPool, id: &str) -> Result<Value, StoreError> {
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = $1",
        K::BODY_COLUMN,
        K::TABLE,
        K::ID_COLUMN
    );
    let row: Option<(Value,)> = sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?;
    row.map(|(v,)| v).ok_or(StoreError::NotFound)
}

/// Every stored body, ordered by id; `scope` keeps those whose [`Kind::SCOPE_COLUMN`]
/// equals it (a kind without one has no scope to narrow on).
pub(super) async fn list<K: Kind>(
    pool: &PgPool,
    scope: Option<&str>,
) -> Result<Vec<Value>, StoreError> {
    debug_assert!(
        scope.is_none() || K::SCOPE_COLUMN.is_some(),
        "{} has no scope column",
        K::TABLE
    );
    let filter = match K::SCOPE_COLUMN {
        Some(column) => format!(" WHERE ($1::text IS NULL OR {column} = $1)"),
        None => String::new(),
    };
    let sql = format!(
        "SELECT {} FROM {}{filter} ORDER BY {}",
        K::BODY_COLUMN,
        K::TABLE,
        K::ID_COLUMN
    );
    let mut query = sqlx::query_as(&sql);
    if K::SCOPE_COLUMN.is_some() {
        query = query.bind(scope);
    }
    let rows: Vec<(Value,)> = query.fetch_all(pool).await?;
    Ok(rows.into_iter().map(|(v,)| v).collect())
}

/// Inserts a new resource; an existing id is [`Kind::duplicate_id`]. Returns the
/// revision.
pub(super) async fn create<K: Kind>(pool: &PgPool, record: &K::Record) -> Result<i64, StoreError> {
    let mut tx = pool.begin().await?;
    let revision = create_in::<K>(&mut tx, record).await?;
    tx.commit().await?;
    Ok(revision)
}

/// [`create`] inside a transaction the caller commits.
async fn create_in<K: Kind>(tx: &mut Tx<'_>, record: &K::Record) -> Result<i64, StoreError> {
    create_row::<K>(tx, record).await?.log(tx).await
}

/// The row of [`create`], its change left to [`Pending::log`].
pub(super) async fn create_row<K: Kind>(
    tx: &mut Tx<'_>,
    record: &K::Record,
) -> Result<Pending, StoreError> {
    let id = K::id(record);
    let body = K::body(record)?;
    let columns = written_columns::<K>();
    let placeholders: Vec<String> = (2..=columns.len() + 1).map(|i| format!("${i}")).collect();
    // The revision is stamped once the change log has given it, in the same transaction.
    let sql = format!(
        "INSERT INTO {table} ({id_column}, {columns}, revision) VALUES ($1, {placeholders}, 0)
         ON CONFLICT ({id_column}) DO NOTHING",
        table = K::TABLE,
        id_column = K::ID_COLUMN,
        columns = columns.join(", "),
        placeholders = placeholders.join(", "),
    );
    let inserted = bind_written::<K>(sqlx::query(&sql).bind(id), record, &body)
        .execute(&mut **tx)
        .await
        .map_err(map_unique::<K>)?;
    if inserted.rows_affected() == 0 {
        return Err(K::duplicate_id(id));
    }
    Ok(Pending::of::<K>(
        id,
        Some(body),
        Some(change_tags::<K>(record)),
        None,
    ))
}

/// Replaces an existing resource; an unknown id is [`StoreError::NotFound`]. Returns the
/// revision.
pub(super) async fn replace<K: Kind>(pool: &PgPool, record: &K::Record) -> Result<i64, StoreError> {
    let mut tx = pool.begin().await?;
    let revision = replace_in::<K>(&mut tx, record).await?;
    tx.commit().await?;
    Ok(revision)
}

/// [`replace`] inside a transaction the caller commits.
async fn replace_in<K: Kind>(tx: &mut Tx<'_>, record: &K::Record) -> Result<i64, StoreError> {
    replace_row::<K>(tx, record).await?.log(tx).await
}

/// The row of [`replace`], its change left to [`Pending::log`].
pub(super) async fn replace_row<K: Kind>(
    tx: &mut Tx<'_>,
    record: &K::Record,
) -> Result<Pending, StoreError> {
    let id = K::id(record);
    let body = K::body(record)?;
    // Locking the row keeps prev_tags exact when two writers race on one resource.
    let lock = format!(
        "SELECT {} FROM {} WHERE {} = $1 FOR UPDATE",
        tags_source::<K>(),
        K::TABLE,
        K::ID_COLUMN
    );
    let Some(prev) = sqlx::query(&lock)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Err(StoreError::NotFound);
    };
    let prev_tags = row_tags::<K>(&prev)?;
    let mut assignments: Vec<String> = written_columns::<K>()
        .iter()
        .enumerate()
        .map(|(i, column)| format!("{column} = ${}", i + 2))
        .collect();
    if let Some(column) = K::UPDATED_AT_COLUMN {
        assignments.push(format!("{column} = now()"));
    }
    let sql = format!(
        "UPDATE {} SET {} WHERE {} = $1",
        K::TABLE,
        assignments.join(", "),
        K::ID_COLUMN
    );
    bind_written::<K>(sqlx::query(&sql).bind(id), record, &body)
        .execute(&mut **tx)
        .await
        .map_err(map_unique::<K>)?;
    Ok(Pending::of::<K>(
        id,
        Some(body),
        Some(change_tags::<K>(record)),
        Some(prev_tags),
    ))
}

/// Deletes a resource; an unknown id is [`StoreError::NotFound`]. Returns the revision.
pub(super) async fn delete<K: Kind>(pool: &PgPool, id: &str) -> Result<i64, StoreError> {
    let mut tx = pool.begin().await?;
    let revision = delete_in::<K>(&mut tx, id).await?;
    tx.commit().await?;
    Ok(revision)
}

/// [`delete`] inside a transaction the caller commits.
async fn delete_in<K: Kind>(tx: &mut Tx<'_>, id: &str) -> Result<i64, StoreError> {
    delete_row::<K>(tx, id).await?.log(tx).await
}

/// The deletion of [`delete`], its change left to [`Pending::log`].
pub(super) async fn delete_row<K: Kind>(tx: &mut Tx<'_>, id: &str) -> Result<Pending, StoreError> {
    let sql = format!(
        "DELETE FROM {} WHERE {} = $1 RETURNING {}",
        K::TABLE,
        K::ID_COLUMN,
        tags_source::<K>()
    );
    let Some(prev) = sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await? else {
        return Err(StoreError::NotFound);
    };
    let prev_tags = row_tags::<K>(&prev)?;
    Ok(Pending::of::<K>(id, None, None, Some(prev_tags)))
}

/// Every stored body, ordered by id, read inside `tx`; with `lock`, the rows stay locked until
/// `tx` ends (what an apply plans against), without it the transaction's snapshot is read.
pub(super) async fn list_in<K: Kind>(
    tx: &mut Tx<'_>,
    lock: bool,
) -> Result<Vec<Value>, StoreError> {
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {}{}",
        K::BODY_COLUMN,
        K::TABLE,
        K::ID_COLUMN,
        if lock { " FOR UPDATE" } else { "" }
    );
    let rows: Vec<(Value,)> = sqlx::query_as(&sql).fetch_all(&mut **tx).await?;
    Ok(rows.into_iter().map(|(v,)| v).collect())
}
