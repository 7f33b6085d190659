//! The reads the import's stages share: the identity listing (which serials the tenant lists)
//! and the import records (which devices have one, in which state).

use std::collections::HashMap;

use super::advice;
use super::reach::{Flow, unreadable};
use super::send::{self, Stopped};
use crate::graph::answer::ErrorInfo;
use crate::graph::model::ImportedIdentity;

impl Flow<'_> {
    /// Serials already registered in the tenant (lowercase) → identity id.
    pub(super) async fn listed(
        &self,
    ) -> Result<Result<HashMap<String, String>, ErrorInfo>, Stopped> {
        let mut listed = HashMap::new();
        let counts = &self.reach.counts;
        let read = crate::listing::each_identity(
            &self.reach.graph,
            &self.reach.budget,
            |identity| {
                if let Some(s) = identity.serial_number.as_deref() {
                    listed.entry(s.to_lowercase()).or_insert(identity.id);
                }
            },
            |_| counts.reads.inc(),
        )
        .await;
        Ok(match read {
            Ok(_) => Ok(listed),
            Err(crate::listing::ReadError::Stopped) => return Err(Stopped),
            Err(e) => Err(ErrorInfo {
                code: advice::UNREADABLE.into(),
                message: format!("cannot read the identity listing: {e}"),
            }),
        })
    }

    /// Every import record of the tenant, by lowercase serial.
    pub(super) async fn records(
        &self,
    ) -> Result<Result<HashMap<String, Vec<ImportedIdentity>>, ErrorInfo>, Stopped> {
        let mut by_serial: HashMap<String, Vec<ImportedIdentity>> = HashMap::new();
        let mut pager = crate::listing::Pager::default();
        let mut next: Option<String> = None;
        let (budget, graph) = (&self.reach.budget, &self.reach.graph);
        loop {
            self.reach.counts.reads.inc();
            let link = next.take();
            let page = send::read(budget, |t| {
                let link = link.clone();
                async move { graph.imported(&t, link.as_deref()).await }
            })
            .await;
            let page = match page {
                Ok(p) => p,
                Err(None) => return Err(Stopped),
                Err(Some(e)) => return Ok(Err(unreadable("the import records", &e))),
            };
            let turn = pager.turn(
                page.value.iter().map(|r| r.id.as_str()),
                page.count,
                page.next_link,
            );
            for r in page.value {
                let serial = r.serial_number.clone().unwrap_or_default().to_lowercase();
                by_serial.entry(serial).or_default().push(r);
            }
            match turn {
                Ok(None) => return Ok(Ok(by_serial)),
                Ok(Some(link)) => next = Some(link),
                Err(e) => {
                    let e = ErrorInfo {
                        code: "PagingLoop".into(),
                        message: e.to_string(),
                    };
                    return Ok(Err(unreadable("the import records", &e)));
                }
            }
        }
    }
}
