//! The agent's desired state as owned collections: the endpoints with their file and
//! the addresses they hold, the published ports with theirs. Each change is written to
//! disk before it is kept in memory, so the two never disagree.
use std::{net::Ipv4Addr, ops::RangeInclusive};

use super::AgentError;
use crate::{
    paths::Paths,
    state::{EndpointRecord, Ipam, PortRecord, Proto, StateError, Store},
};

/// The endpoints the agent owns and the pod CIDR they take addresses from.
pub struct Endpoints {
    store: Store<EndpointRecord>,
    records: Vec<EndpointRecord>,
    ipam: Ipam,
}

impl Endpoints {
    pub fn load(paths: &Paths, ipam: Ipam) -> Result<Self, StateError> {
        let store = Store::new(paths.state_file());
        let records = store.load()?;
        Ok(Endpoints { store, records, ipam })
    }

    pub fn all(&self) -> &[EndpointRecord] {
        &self.records
    }

    pub fn get(&self, name: &str) -> Option<&EndpointRecord> {
        self.records.iter().find(|e| e.name == name)
    }

    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    /// A requested address checked, or the lowest free one.
    pub fn assign(&self, requested: Option<Ipv4Addr>) -> Result<Ipv4Addr, StateError> {
        self.ipam.assign(requested, &self.records)
    }

    pub fn insert(&mut self, rec: EndpointRecord) -> Result<(), StateError> {
        let mut next = self.records.clone();
        next.push(rec);
        self.replace(next)
    }

    /// Removes the endpoint `name`; None when there is none.
    pub fn remove(&mut self, name: &str) -> Result<Option<EndpointRecord>, StateError> {
        let Some(pos) = self.records.iter().position(|e| e.name == name) else { return Ok(None) };
        let mut next = self.records.clone();
        let rec = next.remove(pos);
        self.replace(next)?;
        Ok(Some(rec))
    }

    /// The whole list, saved then kept.
    pub fn replace(&mut self, records: Vec<EndpointRecord>) -> Result<(), StateError> {
        self.store.save(&records)?;
        self.records = records;
        Ok(())
    }
}

/// The published ports and the masquerade range they must stay out of.
pub struct Ports {
    store: Store<PortRecord>,
    records: Vec<PortRecord>,
    nat: RangeInclusive<u16>,
}

impl Ports {
    pub fn load(paths: &Paths, nat: RangeInclusive<u16>) -> Result<Self, StateError> {
        let store = Store::new(paths.ports_file());
        let records = store.load()?;
        Ok(Ports { store, records, nat })
    }

    pub fn all(&self) -> &[PortRecord] {
        &self.records
    }

    pub fn nat_range(&self) -> &RangeInclusive<u16> {
        &self.nat
    }

    pub fn of_endpoint<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a PortRecord> + 'a {
        self.records.iter().filter(move |p| p.endpoint == name)
    }

    /// Refuses a host port masquerade may hand out.
    pub fn check_range(&self, port: u16) -> Result<(), AgentError> {
        if self.nat.contains(&port) {
            return Err(AgentError::PortInNatRange { port, nat: self.nat.clone() });
        }
        Ok(())
    }

    /// The published port that claims the same packets as `rec`, if any.
    pub fn clash(&self, rec: &PortRecord) -> Option<&PortRecord> {
        self.records.iter().find(|p| p.clashes(rec))
    }

    pub fn insert(&mut self, rec: PortRecord) -> Result<(), StateError> {
        let mut next = self.records.clone();
        next.push(rec);
        self.save(next)
    }

    /// Unpublishes `proto host_ip:host_port`; None when it is not published.
    pub fn remove(
        &mut self,
        proto: Proto,
        host_port: u16,
        host_ip: Option<Ipv4Addr>,
    ) -> Result<Option<PortRecord>, StateError> {
        let Some(pos) = self
            .records
            .iter()
            .position(|p| p.proto == proto && p.host_port == host_port && p.host_ip == host_ip)
        else {
            return Ok(None);
        };
        let mut next = self.records.clone();
        let rec = next.remove(pos);
        self.save(next)?;
        Ok(Some(rec))
    }

    /// Keeps the ports of the endpoints `keep` says yes to; true when any went.
    pub fn retain_endpoints(&mut self, keep: impl Fn(&str) -> bool) -> Result<bool, StateError> {
        let next: Vec<_> = self.records.iter().filter(|p| keep(&p.endpoint)).cloned().collect();
        if next.len() == self.records.len() {
            return Ok(false);
        }
        self.save(next)?;
        Ok(true)
    }

    fn save(&mut self, records: Vec<PortRecord>) -> Result<(), StateError> {
        self.store.save(&records)?;
        self.records = records;
        Ok(())
    }
}
