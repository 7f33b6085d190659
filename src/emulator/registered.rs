//! The identities a tenant's syncs registered from its import records: its own, listed after
//! the configured ones (which every tenant shares), each with an Entra device object so that
//! group member writes can take it. The lookups here span both kinds, so that the identity,
//! assignment, device and member routes treat a registered device like a configured one.

use std::collections::{HashMap, HashSet};

use super::directory::Entry;
use super::entra::DeviceObject;
#[cfg(test)]
use super::ids::identity_of_object;
use super::imports::{Fields, serial_key};

/// What the import record gave the identity beyond its serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Imported {
    pub group_tag: String,
    pub product_key: String,
    pub upn: String,
}

#[derive(Debug, Default)]
pub(crate) struct Registered {
    entries: Vec<Entry>,
    /// Parallel to `entries`.
    imported: Vec<Imported>,
    index: HashMap<String, usize>,
    serials: HashSet<String>,
}

impl Registered {
    /// Register `id` (lowercase) from a record's fields; `false` when it already was.
    pub(crate) fn register(&mut self, id: &str, fields: &Fields) -> bool {
        if self.index.contains_key(id) {
            return false;
        }
        self.index.insert(id.to_string(), self.entries.len());
        self.entries.push(Entry {
            id: id.to_string(),
            serial: fields.serial.clone(),
        });
        self.imported.push(Imported {
            group_tag: fields.group_tag.clone(),
            product_key: fields.product_key.clone(),
            upn: fields.upn.clone(),
        });
        self.serials.insert(serial_key(&fields.serial));
        true
    }

    /// In registration order.
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The identity with this (lowercase) id.
    pub(crate) fn get(&self, id: &str) -> Option<&Entry> {
        self.index.get(id).and_then(|&at| self.entries.get(at))
    }

    pub(crate) fn imported(&self, id: &str) -> Option<&Imported> {
        self.index.get(id).and_then(|&at| self.imported.get(at))
    }

    /// Whether a registered identity has this serial key ([`serial_key`]).
    pub(crate) fn has_serial(&self, key: &str) -> bool {
        self.serials.contains(key)
    }

    pub(crate) fn device(&self, identity: &str) -> Option<DeviceObject> {
        let entry = self.get(identity)?;
        DeviceObject::of(&entry.id, &entry.serial)
    }

    /// The registered identities' device objects, in order.
    pub(crate) fn devices(&self) -> Vec<DeviceObject> {
        self.entries
            .iter()
            .filter_map(|e| DeviceObject::of(&e.id, &e.serial))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_registers_once_with_its_device() {
        let id = "00000001-0000-4000-8000-000000000a12";
        let fields = Fields {
            serial: " pf-1 ".into(),
            group_tag: "Kiosk".into(),
            ..Fields::default()
        };
        let mut r = Registered::default();
        assert!(r.register(id, &fields));
        assert!(!r.register(id, &fields));
        assert_eq!(r.entries().len(), 1);
        assert!(r.has_serial("PF-1"));
        assert_eq!(r.imported(id).map(|i| i.group_tag.as_str()), Some("Kiosk"));
        let device = r.devices().pop().unwrap();
        assert_eq!(r.device(id), Some(device.clone()));
        assert_eq!(identity_of_object(&device.id).as_deref(), Some(id));
        assert_eq!(r.get("00000002-0000-4000-8000-000000000a12"), None);
    }
}
