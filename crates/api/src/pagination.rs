//! `limit`, `marker`, `sort_key`, `sort_dir` and the `next` link.

use magnum_store::{Page, SortDirection};

use crate::error::ApiError;
use crate::input::QueryArguments;

pub const PAGINATION_ARGUMENTS: [&str; 4] = ["limit", "marker", "sort_key", "sort_dir"];

/// Reads the pagination arguments; `sort_keys` are the resource's sortable columns.
pub fn page_from_query(
    query: &QueryArguments,
    sort_keys: &[(&'static str, bool)],
    max_limit: u32,
) -> Result<Page, ApiError> {
    let limit = match query.get("limit") {
        None => max_limit,
        Some(text) => {
            let trimmed = text.trim();
            let digits = trimmed.strip_prefix(['-', '+']).unwrap_or(trimmed);
            // Python's int() has no upper bound; such a limit is simply capped.
            let huge = digits.len() > 18 && digits.chars().all(|c| c.is_ascii_digit());
            let parsed: i64 = if huge {
                if trimmed.starts_with('-') {
                    -1
                } else {
                    i64::MAX
                }
            } else {
                trimmed.parse().map_err(|_| {
                ApiError::invalid_input(
                    "limit",
                    text,
                    &format!(
                        "unable to convert to int. Error: invalid literal for int() with base 10: '{text}'"
                    ),
                )
            })?
            };
            if parsed <= 0 {
                return Err(ApiError::bad_request("Limit must be positive"));
            }
            u32::try_from(parsed).unwrap_or(u32::MAX).min(max_limit)
        }
    };
    let marker = match query.get("marker") {
        None => None,
        Some(text) => Some(magnum_domain::parse_uuid_like(text).ok_or_else(|| {
            ApiError::invalid_input(
                "marker",
                text,
                &format!("unable to convert to uuid. Error: Expected a uuid but received {text}."),
            )
        })?),
    };
    let direction = match query.get("sort_dir").unwrap_or("asc") {
        "asc" => SortDirection::Ascending,
        "desc" => SortDirection::Descending,
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid sort direction: {other}. Acceptable values are 'asc' or 'desc'"
            )))
        }
    };
    let requested_key = query.get("sort_key").unwrap_or("id");
    let sort_key = sort_keys
        .iter()
        .find(|(key, _)| *key == requested_key)
        .map(|(key, _)| *key)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "The sort_key value \"{requested_key}\" is an invalid field for sorting"
            ))
        })?;
    Ok(Page {
        sort_key,
        direction,
        limit,
        marker,
    })
}

/// The `next` link, present only when the page is full.
pub fn next_link(
    base_url: &str,
    collection_path: &str,
    page: &Page,
    returned: usize,
    last_marker: Option<String>,
) -> Option<String> {
    if returned == 0 || returned < page.limit as usize {
        return None;
    }
    let direction = match page.direction {
        SortDirection::Ascending => "asc",
        SortDirection::Descending => "desc",
    };
    Some(format!(
        "{base_url}/v1/{collection_path}?sort_key={}&sort_dir={direction}&limit={}&marker={}",
        page.sort_key,
        page.limit,
        last_marker.unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[(&str, bool)] = &[("id", true), ("name", false)];

    fn error(raw: &str) -> String {
        page_from_query(&QueryArguments::parse(Some(raw)), KEYS, 1000)
            .unwrap_err()
            .detail
    }

    #[test]
    fn arguments_are_checked_with_upstream_messages() {
        assert_eq!(error("limit=0"), "Limit must be positive");
        assert_eq!(error("limit=-3"), "Limit must be positive");
        assert_eq!(
            error("limit=abc"),
            "Invalid input for field/attribute limit. Value: 'abc'. unable to convert to int. Error: invalid literal for int() with base 10: 'abc'"
        );
        assert_eq!(
            error("marker=notauuid"),
            "Invalid input for field/attribute marker. Value: 'notauuid'. unable to convert to uuid. Error: Expected a uuid but received notauuid."
        );
        assert_eq!(
            error("sort_dir=up"),
            "Invalid sort direction: up. Acceptable values are 'asc' or 'desc'"
        );
        assert_eq!(
            error("sort_key=nope"),
            "The sort_key value \"nope\" is an invalid field for sorting"
        );
        let page = page_from_query(&QueryArguments::parse(Some("limit=5000")), KEYS, 1000).unwrap();
        assert_eq!(page.limit, 1000);
        let page = page_from_query(
            &QueryArguments::parse(Some("limit=99999999999999999999")),
            KEYS,
            1000,
        )
        .unwrap();
        assert_eq!(page.limit, 1000);
        assert_eq!(
            error("limit=-99999999999999999999"),
            "Limit must be positive"
        );
    }

    #[test]
    fn next_link_only_for_full_pages() {
        let page = page_from_query(
            &QueryArguments::parse(Some("limit=1&sort_key=name&sort_dir=desc")),
            KEYS,
            1000,
        )
        .unwrap();
        assert_eq!(
            next_link(
                "http://h",
                "clustertemplates",
                &page,
                1,
                Some("u".to_owned())
            )
            .unwrap(),
            "http://h/v1/clustertemplates?sort_key=name&sort_dir=desc&limit=1&marker=u"
        );
        assert_eq!(
            next_link("http://h", "clustertemplates", &page, 0, None),
            None
        );
    }
}
