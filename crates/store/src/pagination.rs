//! Keyset pagination, written once for every list (templates, clusters, nodegroups,
//! quotas): rows ordered by a sort key then by id, starting after a marker row. NULLs sort
//! first ascending and last descending on every engine.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::Any;
use uuid::Uuid;

use crate::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortDirection {
    Ascending,
    Descending,
}

/// One page of a list. `sort_key` must be one of the resource's sort keys.
#[derive(Debug, Clone)]
pub struct Page {
    pub sort_key: &'static str,
    pub direction: SortDirection,
    pub limit: u32,
    pub marker: Option<Uuid>,
}

impl Page {
    pub(crate) fn order(&self) -> Order {
        Order {
            sort_key: self.sort_key,
            direction: self.direction,
            limit: self.limit,
        }
    }
}

/// How a page is ordered and how long it is, whatever its marker is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Order {
    pub sort_key: &'static str,
    pub direction: SortDirection,
    pub limit: u32,
}

/// What is listed: a table, the columns read, and the keys it may be sorted by (with whether
/// each holds integers).
pub(crate) struct Keyset {
    pub table: &'static str,
    pub columns: &'static str,
    pub sort_keys: &'static [(&'static str, bool)],
}

pub(crate) enum Bound {
    Text(String),
    Int(i64),
}

pub(crate) fn bind_all<'q>(
    mut query: Query<'q, Any, AnyArguments<'q>>,
    binds: Vec<Bound>,
) -> Query<'q, Any, AnyArguments<'q>> {
    for bound in binds {
        query = match bound {
            Bound::Text(text) => query.bind(text),
            Bound::Int(integer) => query.bind(integer),
        };
    }
    query
}

pub(crate) enum SortValue {
    Null,
    Int(i64),
    Text(String),
}

fn after_marker(
    key: &str,
    is_integer: bool,
    marker_value: SortValue,
    marker_id: i64,
    direction: SortDirection,
    binds: &mut Vec<Bound>,
) -> String {
    let (beyond, id_beyond) = match direction {
        SortDirection::Ascending => (">", ">"),
        SortDirection::Descending => ("<", "<"),
    };
    let bound = match marker_value {
        SortValue::Null => None,
        SortValue::Int(value) => Some(Bound::Int(value)),
        SortValue::Text(value) if is_integer => Some(Bound::Int(value.parse().unwrap_or_default())),
        SortValue::Text(value) => Some(Bound::Text(value)),
    };
    match (bound, direction) {
        (None, SortDirection::Ascending) => {
            binds.push(Bound::Int(marker_id));
            format!("({key} IS NOT NULL OR ({key} IS NULL AND id {id_beyond} ?))")
        }
        (None, SortDirection::Descending) => {
            binds.push(Bound::Int(marker_id));
            format!("({key} IS NULL AND id {id_beyond} ?)")
        }
        (Some(value), direction) => {
            let same = match &value {
                Bound::Int(integer) => Bound::Int(*integer),
                Bound::Text(text) => Bound::Text(text.clone()),
            };
            binds.push(value);
            binds.push(same);
            binds.push(Bound::Int(marker_id));
            let nulls_after = if direction == SortDirection::Descending {
                format!(" OR {key} IS NULL")
            } else {
                String::new()
            };
            format!("({key} {beyond} ? OR ({key} = ? AND id {id_beyond} ?){nulls_after})")
        }
    }
}

impl Store {
    /// One page of `keyset.table`: rows matching every one of `conditions` (whose `?` take
    /// `binds` in order), after `marker` (its sort value and id) when there is one.
    pub(crate) async fn keyset_page<T>(
        &self,
        keyset: &Keyset,
        order: &Order,
        mut conditions: Vec<String>,
        mut binds: Vec<Bound>,
        marker: Option<(SortValue, i64)>,
        from_row: fn(&AnyRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let key = order.sort_key;
        let is_integer = keyset
            .sort_keys
            .iter()
            .find(|(known, _)| *known == key)
            .map(|(_, is_integer)| *is_integer)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown sort key {key}")))?;
        if let Some((value, id)) = marker {
            conditions.push(after_marker(
                key,
                is_integer,
                value,
                id,
                order.direction,
                &mut binds,
            ));
        }
        let ordering = match order.direction {
            SortDirection::Ascending => format!("({key} IS NULL) DESC, {key} ASC, id ASC"),
            SortDirection::Descending => format!("({key} IS NULL) ASC, {key} DESC, id DESC"),
        };
        binds.push(Bound::Int(i64::from(order.limit)));
        let query = format!(
            "SELECT {} FROM {} WHERE {} ORDER BY {ordering} LIMIT ?",
            keyset.columns,
            keyset.table,
            conditions.join(" AND ")
        );
        let sql = self.sql(&query);
        let rows = bind_all(sqlx::query(&sql), binds)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }
}

/// The sort value and id of the page's marker row, found by `find`; `MarkerNotFound` when
/// the page names a marker `find` does not find.
pub(crate) async fn marker_of<T, Fut>(
    page: &Page,
    find: impl FnOnce(Uuid) -> Fut,
    sort_value: fn(&T, &str) -> SortValue,
    id: fn(&T) -> i64,
) -> Result<Option<(SortValue, i64)>, StoreError>
where
    Fut: std::future::Future<Output = Result<Option<T>, StoreError>>,
{
    let Some(uuid) = page.marker else {
        return Ok(None);
    };
    let marker = find(uuid).await?.ok_or(StoreError::MarkerNotFound(uuid))?;
    Ok(Some((sort_value(&marker, page.sort_key), id(&marker))))
}

/// An absent (NULL) or present text or integer, as a sort value.
pub(crate) fn text_value(value: &Option<String>) -> SortValue {
    value.clone().map_or(SortValue::Null, SortValue::Text)
}

pub(crate) fn int_value(value: Option<i64>) -> SortValue {
    value.map_or(SortValue::Null, SortValue::Int)
}
