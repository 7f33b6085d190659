//! The OData query options of the directory's collections (`/devices`, `/groups`, a group's
//! members), judged as Entra ID judges them: `$top` 1 to 999, `$select` of the type's
//! properties, `$filter` with one `property eq 'literal'` on a property that supports it, and
//! the `$skiptoken` of the emulator's own next links. Other options (`$count`, `$orderby`, …)
//! are ignored. Also the paging every such collection shares.
//!
//! Pure: the routes decide what the answers hold.

use serde_json::{Map, Value, json};

use super::envelope::Ctx;
use super::odata::{skiptoken_for, skiptoken_offset};

/// The directory's cap on `$top`.
pub(crate) const MAX_TOP: usize = 999;

/// What one collection supports.
#[derive(Debug)]
pub(crate) struct Resource {
    /// Graph's type, as in error messages (`microsoft.graph.device`).
    pub type_name: &'static str,
    /// Its properties in Graph's spelling (`$select` names them in any case).
    pub properties: &'static [&'static str],
    /// Properties `$filter` may compare with `eq`.
    pub filterable: &'static [&'static str],
}

/// A decoded query. `raw_*` keep the decoded values a next link repeats.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct DirQuery {
    pub top: Option<usize>,
    pub select: Option<Vec<String>>,
    pub raw_select: Option<String>,
    /// `(property as the resource spells it, literal)` of `$filter=property eq 'literal'`.
    pub filter: Option<(&'static str, String)>,
    pub raw_filter: Option<String>,
    /// Where this page starts.
    pub offset: usize,
}

/// Why a query is refused: a 400 with this code and message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub code: &'static str,
    pub message: String,
}

fn refused(code: &'static str, message: String) -> Refused {
    Refused { code, message }
}

/// Decode a query string (without the `?`) for `resource`.
pub(crate) fn parse(query: &str, resource: &Resource) -> Result<DirQuery, Refused> {
    let mut q = DirQuery::default();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.to_ascii_lowercase().as_str() {
            "$top" => q.top = Some(top(&value)?),
            "$select" => {
                q.select = Some(select(&value, resource)?);
                q.raw_select = Some(value.into_owned());
            }
            "$filter" => {
                q.filter = Some(filter(&value, resource)?);
                q.raw_filter = Some(value.into_owned());
            }
            "$skiptoken" => {
                q.offset = skiptoken_offset(&value).ok_or_else(|| {
                    refused("Request_BadRequest", "The $skiptoken is not valid.".into())
                })?;
            }
            _ => {}
        }
    }
    Ok(q)
}

/// Only the `$select` (what a single object's GET reads).
pub(crate) fn select_only(
    query: &str,
    resource: &Resource,
) -> Result<Option<Vec<String>>, Refused> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case("$select"))
        .map(|(_, v)| select(&v, resource))
        .transpose()
}

fn top(value: &str) -> Result<usize, Refused> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_TOP).contains(&n) => Ok(n),
        _ => Err(refused(
            "Request_BadRequest",
            format!(
                "Invalid page size specified: '{value}'. Must be between 1 and {MAX_TOP} inclusive."
            ),
        )),
    }
}

fn select(value: &str, resource: &Resource) -> Result<Vec<String>, Refused> {
    value
        .split(',')
        .map(str::trim)
        .map(|name| {
            resource
                .properties
                .iter()
                .find(|p| p.eq_ignore_ascii_case(name))
                .map(|p| p.to_string())
                .ok_or_else(|| {
                    refused(
                        "BadRequest",
                        format!(
                            "Parsing OData Select and Expand failed: Could not find a property \
                             named '{name}' on type '{}'.",
                            resource.type_name
                        ),
                    )
                })
        })
        .collect()
}

/// `property eq 'literal'`, the literal's quotes doubled.
fn filter(value: &str, resource: &Resource) -> Result<(&'static str, String), Refused> {
    let unsupported = || {
        refused(
            "Request_UnsupportedQuery",
            format!(
                "Unsupported or invalid query filter clause specified for property of resource '{}'.",
                resource.type_name
            ),
        )
    };
    let f = value.trim();
    let (property, literal) = f.split_once(char::is_whitespace).ok_or_else(unsupported)?;
    let literal = literal.trim_start();
    let literal = literal
        .get(..2)
        .filter(|op| op.eq_ignore_ascii_case("eq"))
        .and_then(|_| literal.get(2..))
        .ok_or_else(unsupported)?;
    let property = resource
        .filterable
        .iter()
        .find(|p| p.eq_ignore_ascii_case(property.trim()))
        .ok_or_else(unsupported)?;
    let body = literal
        .trim()
        .strip_prefix('\'')
        .and_then(|l| l.strip_suffix('\''))
        .ok_or_else(unsupported)?;
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\'' && chars.next() != Some('\'') {
            return Err(unsupported());
        }
        out.push(c);
    }
    Ok((property, out))
}

/// The object as Graph renders it: every property, or with `$select` the named ones (and
/// `id`, the key Graph always returns).
pub(crate) fn render(
    props: Vec<(&'static str, Value)>,
    select: Option<&[String]>,
) -> Map<String, Value> {
    props
        .into_iter()
        .filter(|(name, _)| select.is_none_or(|s| *name == "id" || s.iter().any(|n| n == name)))
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

/// One page of a collection of `total` objects: the range it holds and where the next page
/// starts (none on the last).
pub(crate) fn page(
    q: &DirQuery,
    total: usize,
    cap: usize,
) -> (std::ops::Range<usize>, Option<usize>) {
    let len = q.top.unwrap_or(cap).min(cap.max(1));
    let start = q.offset.min(total);
    let end = start.saturating_add(len).min(total);
    (start..end, (end < total).then_some(end))
}

/// The collection's answer: `@odata.context`, the next link (absolute, on the emulator's own
/// address, repeating `$top`, `$filter` and `$select`), and the page's objects. `path`: the
/// collection below the version (`devices`, `groups/{id}/members`).
pub(crate) fn collection(
    ctx: &Ctx,
    own: &str,
    path: &str,
    context: &str,
    q: &DirQuery,
    next: Option<usize>,
    value: Vec<Value>,
) -> Value {
    let mut body = Map::new();
    let selected = q
        .select
        .as_ref()
        .map(|s| format!("({})", s.join(",")))
        .unwrap_or_default();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "http://{}/{}/$metadata#{context}{selected}",
            ctx.host, ctx.version
        )),
    );
    if let Some(offset) = next {
        let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        let mut params = Vec::new();
        if let Some(top) = q.top {
            params.push(format!("$top={top}"));
        }
        if let Some(filter) = &q.raw_filter {
            params.push(format!("$filter={}", enc(filter)));
        }
        if let Some(select) = &q.raw_select {
            params.push(format!("$select={}", enc(select)));
        }
        params.push(format!("$skiptoken={}", skiptoken_for(offset)));
        body.insert(
            "@odata.nextLink".into(),
            json!(format!(
                "http://{own}/{}/{path}?{}",
                ctx.version,
                params.join("&")
            )),
        );
    }
    body.insert("value".into(), Value::Array(value));
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE: Resource = Resource {
        type_name: "microsoft.graph.device",
        properties: &["id", "deviceId", "displayName"],
        filterable: &["deviceId", "displayName"],
    };

    fn encoded(key: &str, value: &str) -> String {
        let e: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
        format!("{key}={e}")
    }

    #[test]
    fn top_select_and_skiptoken() {
        let q = parse("$select=id,DEVICEID&$top=999", &DEVICE).unwrap();
        assert_eq!(q.top, Some(999));
        assert_eq!(
            q.select,
            Some(vec!["id".to_string(), "deviceId".to_string()])
        );
        for bad in [
            "$top=0",
            "$top=1000",
            "$top=x",
            "$select=nope",
            "$skiptoken=zz",
        ] {
            assert!(parse(bad, &DEVICE).is_err(), "{bad}");
        }
        let token = skiptoken_for(7);
        assert_eq!(
            parse(&format!("$skiptoken={token}"), &DEVICE)
                .unwrap()
                .offset,
            7
        );
        assert_eq!(
            parse("$count=true&other=1", &DEVICE).unwrap(),
            DirQuery::default()
        );
    }

    #[test]
    fn eq_filters_on_filterable_properties_only() {
        let q = parse(&encoded("$filter", "deviceId eq 'AB-1'"), &DEVICE).unwrap();
        assert_eq!(q.filter, Some(("deviceId", "AB-1".to_string())));
        let q = parse(
            &encoded("$filter", "displayname  EQ  'O''Brien''s'"),
            &DEVICE,
        )
        .unwrap();
        assert_eq!(q.filter, Some(("displayName", "O'Brien's".to_string())));
        for bad in [
            "id eq 'x'",
            "deviceId ne 'x'",
            "deviceId eq x",
            "startswith(displayName,'x')",
            "deviceId eq 'a'b'",
            "deviceId",
        ] {
            let r = parse(&encoded("$filter", bad), &DEVICE);
            assert_eq!(
                r.map_err(|e| e.code),
                Err("Request_UnsupportedQuery"),
                "{bad}"
            );
        }
    }

    #[test]
    fn pages_follow_top_and_the_cap() {
        let q = DirQuery {
            top: Some(5),
            offset: 8,
            ..DirQuery::default()
        };
        assert_eq!(page(&q, 12, 100), (8..12, None));
        assert_eq!(page(&q, 20, 3), (8..11, Some(11)));
        assert_eq!(page(&DirQuery::default(), 0, 100), (0..0, None));
        let far = DirQuery {
            offset: 50,
            ..DirQuery::default()
        };
        assert_eq!(page(&far, 3, 100), (3..3, None));
    }
}
