//! The OData query options the identity listing understands, judged the way Graph judges
//! them: `$top` (1 to 1000), `$filter` (only `contains(serialNumber,'…')`, and not with a
//! hyphen in the value), `$select` (known properties), and the `$skiptoken` the emulator's
//! own next links carry. Other options are ignored, as Graph ignores options a resource does
//! not use.
//!
//! Pure parsing: the listing decides what the answers mean.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

use super::directory::{IDENTITY_TYPE, is_property};

/// Graph's cap on `$top`.
pub(crate) const MAX_TOP: usize = 1000;

/// What Intune says about a filter it does not support (also a hyphenated serial); the
/// envelope adds the Operation ID when it is in Intune's form.
pub(crate) const FILTER_REFUSED: &str = "An error has occurred";

/// The listing's query, decoded. `raw_*` keep the decoded values the next link repeats.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Query {
    pub top: Option<usize>,
    /// The `contains` value: case-insensitive substring of the serial number.
    pub serial: Option<String>,
    pub raw_filter: Option<String>,
    pub select: Option<Vec<String>>,
    pub raw_select: Option<String>,
    /// Where this page starts in the (filtered) listing.
    pub offset: usize,
}

/// Why a query is refused: always a 400 `BadRequest` with this message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused(pub String);

/// Decode a query string (without the `?`). Keys and values are percent-decoded (`+` is a
/// space), as a form is.
pub(crate) fn parse(query: &str) -> Result<Query, Refused> {
    let mut q = Query::default();
    let mut seen = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "$top" | "$filter" | "$select" | "$skiptoken") {
            continue;
        }
        if seen.contains(&key) {
            return Err(Refused(format!(
                "Query option '{key}' was specified more than once, but it must be specified at most once."
            )));
        }
        seen.push(key.clone());
        match key.as_str() {
            "$top" => q.top = Some(top(&value)?),
            "$filter" => {
                q.serial = Some(filter(&value)?);
                q.raw_filter = Some(value.into_owned());
            }
            "$select" => {
                q.select = Some(select(&value)?);
                q.raw_select = Some(value.into_owned());
            }
            _ => q.offset = skiptoken(&value)?,
        }
    }
    Ok(q)
}

/// Only the `$select` of a query (what the single-identity GET reads), `None` when absent.
pub(crate) fn select_only(query: &str) -> Result<Option<Vec<String>>, Refused> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case("$select"))
        .map(|(_, v)| select(&v))
        .transpose()
}

/// Whether the raw query carries a `$select` at all (valid or not).
pub(crate) fn has_select(query: &str) -> bool {
    url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k.eq_ignore_ascii_case("$select"))
}

fn top(value: &str) -> Result<usize, Refused> {
    let n: usize = value.trim().parse().map_err(|_| {
        Refused(format!(
            "Invalid value '{value}' for $top query option found. The $top query option \
             requires a non-negative integer value."
        ))
    })?;
    match n {
        0 => Err(Refused(
            "The value of the $top query option must be between 1 and 1000.".into(),
        )),
        n if n > MAX_TOP => Err(Refused(format!(
            "The limit of '{MAX_TOP}' for Top query has been exceeded. The value from the \
             incoming request is '{n}'."
        ))),
        n => Ok(n),
    }
}

/// `contains(serialNumber,'…')` with the literal's quotes doubled; the value, undoubled.
/// Anything else, and a value with a hyphen, is refused the way Intune refuses it.
fn filter(value: &str) -> Result<String, Refused> {
    let serial = contains_serial(value).ok_or_else(|| Refused(FILTER_REFUSED.into()))?;
    if serial.contains('-') {
        return Err(Refused(FILTER_REFUSED.into()));
    }
    Ok(serial)
}

fn contains_serial(filter: &str) -> Option<String> {
    let f = filter.trim();
    let open = f.find('(')?;
    if !f[..open].trim().eq_ignore_ascii_case("contains") {
        return None;
    }
    let args = f[open + 1..].strip_suffix(')')?;
    let (property, literal) = args.split_once(',')?;
    if !property.trim().eq_ignore_ascii_case("serialNumber") {
        return None;
    }
    let body = literal.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\'' && chars.next() != Some('\'') {
            // A lone quote ends the literal early: not one string.
            return None;
        }
        out.push(c);
    }
    Some(out)
}

fn select(value: &str) -> Result<Vec<String>, Refused> {
    value
        .split(',')
        .map(str::trim)
        .map(|name| {
            if is_property(name) {
                Ok(name.to_string())
            } else {
                Err(Refused(format!(
                    "Could not find a property named '{name}' on type '{IDENTITY_TYPE}'."
                )))
            }
        })
        .collect()
}

/// The opaque `$skiptoken` of the page starting at `offset`.
pub(crate) fn skiptoken_for(offset: usize) -> String {
    B64URL.encode(format!("emulator-offset:{offset}"))
}

fn skiptoken(value: &str) -> Result<usize, Refused> {
    skiptoken_offset(value).ok_or_else(|| Refused("The $skiptoken is not valid.".into()))
}

/// Where the page of a `$skiptoken` from [`skiptoken_for`] starts; `None` for any other value.
pub(crate) fn skiptoken_offset(value: &str) -> Option<usize> {
    B64URL
        .decode(value.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("emulator-offset:")?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(filter: &str) -> String {
        let e: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
        format!("$filter={e}")
    }

    #[test]
    fn top_bounds() {
        assert_eq!(parse("$top=1").unwrap().top, Some(1));
        assert_eq!(parse("%24top=1000").unwrap().top, Some(1000));
        for bad in ["$top=0", "$top=1001", "$top=x", "$top=", "$top=-1"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("$top=1&$top=2").is_err());
        assert_eq!(parse("other=1").unwrap(), Query::default());
    }

    #[test]
    fn contains_filter_undoubles_quotes_and_refuses_the_rest() {
        let q = parse(&encoded("contains(serialNumber,'O''Brien 7')")).unwrap();
        assert_eq!(q.serial.as_deref(), Some("O'Brien 7"));
        assert_eq!(
            q.raw_filter.as_deref(),
            Some("contains(serialNumber,'O''Brien 7')")
        );
        let q = parse(&encoded(" CONTAINS( serialnumber , 'ab' ) ")).unwrap();
        assert_eq!(q.serial.as_deref(), Some("ab"));
        for bad in [
            "contains(serialNumber,'AB-12')",
            "serialNumber eq 'AB12'",
            "startswith(serialNumber,'AB')",
            "contains(groupTag,'AB')",
            "contains(serialNumber,'a'b')",
            "contains(serialNumber,AB)",
        ] {
            assert_eq!(
                parse(&encoded(bad)),
                Err(Refused(FILTER_REFUSED.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn select_and_skiptoken() {
        let q = parse("$select=serialNumber,%20deploymentProfileAssignmentStatus").unwrap();
        assert_eq!(
            q.select,
            Some(vec![
                "serialNumber".to_string(),
                "deploymentProfileAssignmentStatus".to_string()
            ])
        );
        assert!(parse("$select=nope").is_err());
        assert!(has_select("$select=nope"));
        assert!(!has_select("$top=3"));
        assert_eq!(select_only("$top=3").unwrap(), None);
        let token = skiptoken_for(250);
        assert_eq!(parse(&format!("$skiptoken={token}")).unwrap().offset, 250);
        assert!(parse("$skiptoken=zzz").is_err());
    }
}
