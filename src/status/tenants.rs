//! Whose listing holds each landed row. A results file of a `--tenants` run names each row's
//! tenant: reading every row from one tenant would report the others' devices `notFound`. So
//! the rows are grouped by tenant and each group is read through its own budget and client, all
//! at once, so that a throttled or failing tenant never holds back or stops another; the
//! groups' lines are merged back into row order by the caller.

use std::path::Path;
use std::sync::Mutex;

use futures::future::join_all;
use tokio_util::sync::CancellationToken;

use super::StatusError;
use super::reading::{self, Reading};
use super::results::Landed;
use crate::budget::Budget;
use crate::config::{Config, Tenant};
use crate::graph::client::GraphClient;
use crate::listing::{Listed, ReadError};

/// Tenant names an error message shows before `and N more`.
const SHOWN: usize = 3;

/// A tenant of the tenants file (`None`: the one tenant of a single-tenant status) and the
/// landed rows it holds.
pub type Group<'t> = (Option<&'t Tenant>, Vec<Landed>);

/// One tenant's landed rows, and what reads them.
pub struct Reader {
    /// The tenants file's key; `None` in single-tenant use.
    pub key: Option<String>,
    /// The tenant's landed rows, in row order.
    pub landed: Vec<Landed>,
    graph: GraphClient,
    budget: std::sync::Arc<Budget>,
    /// Why the tenant could not be read. It is not read again: a refused token halts its
    /// budget for good, and its rows keep saying why.
    pub failed: Option<String>,
}

/// The landed rows by the tenant that holds them, in the tenants file's order; tenants without
/// rows are left out (nothing of theirs is read). Without `tenants` every row is the one
/// tenant's, unless the results file names tenants: then one tenant's listing would misreport
/// the others' devices, so it is refused before anything is sent.
pub fn group<'t>(
    landed: Vec<Landed>,
    tenants: &'t [Tenant],
    results: &Path,
) -> Result<Vec<Group<'t>>, StatusError> {
    if tenants.is_empty() {
        let named = distinct(landed.iter().filter_map(|l| l.tenant.as_deref()));
        if !named.is_empty() {
            return Err(StatusError::TenantsNeeded {
                results: results.to_path_buf(),
                tenants: shown(&named),
            });
        }
        return Ok(vec![(None, landed)]);
    }
    let untenanted: Vec<u64> = landed
        .iter()
        .filter(|l| l.tenant.is_none())
        .map(|l| l.row)
        .collect();
    if let Some(&row) = untenanted.first() {
        return Err(StatusError::NoTenant {
            results: results.to_path_buf(),
            row,
            more: untenanted.len() - 1,
        });
    }
    let unknown = distinct(
        landed
            .iter()
            .filter_map(|l| l.tenant.as_deref())
            .filter(|name| crate::tenants::find(tenants, name).is_none()),
    );
    if !unknown.is_empty() {
        let known: Vec<&str> = tenants.iter().map(|t| t.key.as_str()).collect();
        return Err(StatusError::UnknownTenant {
            results: results.to_path_buf(),
            tenants: shown(&unknown),
            known: known.join(", "),
        });
    }
    let mut groups: Vec<(&Tenant, Vec<Landed>)> = tenants.iter().map(|t| (t, Vec::new())).collect();
    for l in landed {
        let found = l
            .tenant
            .as_deref()
            .and_then(|n| crate::tenants::find(tenants, n));
        // Every row's tenant was found above; the index is the found entry's own.
        if let Some(i) = found.and_then(|f| tenants.iter().position(|t| std::ptr::eq(t, f))) {
            groups[i].1.push(l);
        }
    }
    Ok(groups
        .into_iter()
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(t, rows)| (Some(t), rows))
        .collect())
}

/// Names in first-seen order, each once (by the tenants file's matching rule), quoted.
fn distinct<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen: Vec<&str> = Vec::new();
    for name in names {
        if !seen.iter().any(|s| crate::tenants::same_key(s, name)) {
            seen.push(name);
        }
    }
    seen.iter().map(|n| format!("{n:?}")).collect()
}

/// `a, b, c and 2 more`.
fn shown(names: &[String]) -> String {
    let mut s = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

/// A tenant connected per group (see [`crate::connect`]).
pub fn connect(
    groups: Vec<Group<'_>>,
    base: &Config,
    shutdown: &CancellationToken,
) -> Result<Vec<Reader>, StatusError> {
    groups
        .into_iter()
        .map(|(tenant, landed)| {
            let config = tenant.map_or_else(|| base.clone(), |t| base.for_tenant(t));
            let c =
                crate::connect::connect(tenant, config, shutdown).map_err(StatusError::Config)?;
            Ok(Reader {
                key: c.key,
                landed,
                graph: c.graph,
                budget: c.budget,
                failed: None,
            })
        })
        .collect()
}

/// One reading of every tenant not failed yet, all at once, each through its own budget: one
/// part per reader, in order. A tenant whose read fails gets [`Reading::not_read`] lines and is
/// marked failed. `None` when `shutdown` stopped the reading (nothing complete to write).
/// `on_page` hears the pages and identities read so far, all tenants together.
pub async fn read_all(
    readers: &mut [Reader],
    shutdown: &CancellationToken,
    on_page: impl Fn(Listed) + Sync,
) -> Option<Vec<Reading>> {
    let so_far = Mutex::new(vec![Listed::default(); readers.len()]);
    let reads = readers.iter().enumerate().map(|(i, r)| {
        let (so_far, on_page) = (&so_far, &on_page);
        async move {
            if r.failed.is_some() {
                return None;
            }
            let heard = move |listed: Listed| {
                let total = {
                    let mut so_far = so_far.lock().unwrap_or_else(|p| p.into_inner());
                    so_far[i] = listed;
                    so_far.iter().fold(Listed::default(), |a, l| Listed {
                        pages: a.pages + l.pages,
                        identities: a.identities + l.identities,
                    })
                };
                on_page(total);
            };
            Some(reading::read(&r.graph, &r.budget, &r.landed, heard).await)
        }
    });
    let results = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return None,
        results = join_all(reads) => results,
    };
    if shutdown.is_cancelled() {
        return None;
    }
    let parts = readers
        .iter_mut()
        .zip(results)
        .map(|(r, result)| match result {
            Some(Ok(reading)) => reading,
            Some(Err(e)) => {
                let why = failure(&r.budget, &e);
                let part = Reading::not_read(&r.landed, &why);
                r.failed = Some(why);
                part
            }
            None => Reading::not_read(&r.landed, r.failed.as_deref().unwrap_or_default()),
        });
    Some(parts.collect())
}

/// Why a tenant's reading did not complete, with the fix when there is one.
fn failure(budget: &Budget, e: &ReadError) -> String {
    match e {
        ReadError::Stopped => budget
            .halt()
            .reason()
            .unwrap_or_else(|| "stopped".to_string()),
        ReadError::Failed { code, .. } if code.eq_ignore_ascii_case("Forbidden") => format!(
            "reading the identity listing was refused: {e} (the app needs the Graph application \
             permission DeviceManagementServiceConfig.Read.All or ReadWrite.All)"
        ),
        ReadError::Failed { .. } => format!("reading the identity listing failed: {e}"),
        ReadError::PagingLoop(_) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cloud, Credentials, RateSpec};
    use uuid::Uuid;

    fn tenant(key: &str) -> Tenant {
        Tenant {
            key: key.into(),
            credentials: Credentials::StaticToken("t".into()),
            cloud: Cloud::Global,
            graph_url: "https://graph.example/beta".into(),
            authority_url: "https://login.example".into(),
            rate: RateSpec::default(),
        }
    }

    fn landed(row: u64, tenant: Option<&str>) -> Landed {
        Landed {
            row,
            device_id: format!("{row:08x}-0000-4000-8000-000000000000"),
            device: Uuid::nil(),
            serial_number: None,
            tenant: tenant.map(str::to_string),
        }
    }

    fn keys<'a>(groups: &[Group<'a>]) -> Vec<(Option<&'a str>, Vec<u64>)> {
        groups
            .iter()
            .map(|(t, rows)| {
                (
                    t.map(|t| t.key.as_str()),
                    rows.iter().map(|l| l.row).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn rows_go_to_their_tenant_in_the_files_order_whatever_the_case() {
        let tenants = [tenant("contoso"), tenant("idle"), tenant("fabrikam")];
        let rows = vec![
            landed(1, Some("FABRIKAM")),
            landed(2, Some("contoso")),
            landed(3, Some("fabrikam")),
        ];
        let groups = group(rows, &tenants, Path::new("r.csv")).unwrap();
        assert_eq!(
            keys(&groups),
            [(Some("contoso"), vec![2]), (Some("fabrikam"), vec![1, 3])]
        );
        let single = group(vec![landed(1, None)], &[], Path::new("r.csv")).unwrap();
        assert_eq!(keys(&single), [(None, vec![1])]);
    }

    #[test]
    fn named_tenants_without_a_tenants_file_are_refused_naming_a_few() {
        let rows = ["a", "A", "b", "c", "d", "e"]
            .iter()
            .enumerate()
            .map(|(i, t)| landed(i as u64 + 1, Some(t)))
            .chain([landed(9, None)])
            .collect();
        let err = group(rows, &[], Path::new("r.csv")).unwrap_err();
        assert!(matches!(err, StatusError::TenantsNeeded { .. }));
        let text = err.to_string();
        assert!(
            text.contains("names tenants (\"a\", \"b\", \"c\" and 2 more)"),
            "{text}"
        );
        assert!(text.contains("--tenants"), "{text}");
    }

    #[test]
    fn unknown_and_missing_tenants_are_refused() {
        let tenants = [tenant("contoso")];
        let rows = vec![landed(1, Some("contoso")), landed(2, Some("woodgrove"))];
        let text = group(rows, &tenants, Path::new("r.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("\"woodgrove\"") && text.contains("it names: contoso"),
            "{text}"
        );
        let rows = vec![landed(1, Some("contoso")), landed(4, None), landed(5, None)];
        let text = group(rows, &tenants, Path::new("r.csv"))
            .unwrap_err()
            .to_string();
        assert!(text.contains("row 4 (and 1 more)"), "{text}");
    }
}
