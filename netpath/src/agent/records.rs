//! The agent's desired state as owned collections: the endpoints and the addresses they
//! hold, the published ports. Each change is committed to the state database before it
//! is kept in memory, so the two never disagree.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
    sync::Arc,
};

use super::AgentError;
use crate::state::{Db, EndpointRecord, Ipam, Ipam6, PortRecord, Proto, StateError};

/// The endpoints the agent owns and the pod CIDR they take addresses from.
pub struct Endpoints {
    db: Arc<Db>,
    records: Vec<EndpointRecord>,
    ipam: Ipam,
    /// None: no IPv6 pod CIDR, endpoints are IPv4 only.
    ipam6: Option<Ipam6>,
}

impl Endpoints {
    pub fn load(db: Arc<Db>, ipam: Ipam, ipam6: Option<Ipam6>) -> Result<Self, StateError> {
        let records = db.endpoints()?;
        Ok(Endpoints { db, records, ipam, ipam6 })
    }

    pub fn all(&self) -> &[EndpointRecord] {
        &self.records
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn get(&self, name: &str) -> Option<&EndpointRecord> {
        self.records.iter().find(|e| e.name == name)
    }

    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    pub fn ipam6(&self) -> Option<&Ipam6> {
        self.ipam6.as_ref()
    }

    /// [`Endpoints::assign`] for IPv6: None without an IPv6 pod CIDR (and then asking
    /// for an address is an error).
    pub fn assign6(
        &self,
        requested: Option<Ipv6Addr>,
        held: &[Ipv6Addr],
    ) -> Result<Option<Ipv6Addr>, super::AgentError> {
        let Some(ipam6) = &self.ipam6 else {
            return match requested {
                Some(_) => Err(super::AgentError::NoPodCidr6),
                None => Ok(None),
            };
        };
        let mut owners: std::collections::HashMap<Ipv6Addr, &str> =
            self.records.iter().filter_map(|e| Some((e.ip6?, e.name.as_str()))).collect();
        owners.extend(held.iter().map(|ip| (*ip, "an endpoint change in progress")));
        Ok(Some(ipam6.assign_with(requested, |ip| owners.get(&ip).map(|n| n.to_string()))?))
    }

    /// A requested address checked, or the lowest free one; none of `held` either (the
    /// addresses of endpoint changes in flight, not in the records yet or any more).
    pub fn assign(&self, requested: Option<Ipv4Addr>, held: &[Ipv4Addr]) -> Result<Ipv4Addr, StateError> {
        let mut owners: std::collections::HashMap<Ipv4Addr, &str> =
            self.records.iter().map(|e| (e.ip, e.name.as_str())).collect();
        owners.extend(held.iter().map(|ip| (*ip, "an endpoint change in progress")));
        self.ipam.assign_with(requested, |ip| owners.get(&ip).map(|n| n.to_string()))
    }

    pub fn insert(&mut self, rec: EndpointRecord) -> Result<(), StateError> {
        self.db.write("endpoints", |tx| tx.put_endpoint(&rec))?;
        match self.records.iter_mut().find(|e| e.name == rec.name) {
            Some(old) => *old = rec,
            None => self.records.push(rec),
        }
        Ok(())
    }

    /// Removes the endpoint `name`; None when there is none.
    pub fn remove(&mut self, name: &str) -> Result<Option<EndpointRecord>, StateError> {
        let Some(pos) = self.records.iter().position(|e| e.name == name) else { return Ok(None) };
        self.db.write("endpoints", |tx| tx.del_endpoint(name))?;
        Ok(Some(self.records.remove(pos)))
    }

    /// The whole list, as reconciliation found it: the endpoints that changed or went,
    /// written in one transaction, then kept.
    pub fn replace(&mut self, records: Vec<EndpointRecord>) -> Result<(), StateError> {
        self.db.write("endpoints", |tx| {
            for old in self.records.iter().filter(|o| !records.iter().any(|r| r.name == o.name)) {
                tx.del_endpoint(&old.name)?;
            }
            for rec in records.iter().filter(|r| !self.records.contains(r)) {
                tx.put_endpoint(rec)?;
            }
            Ok(())
        })?;
        self.records = records;
        Ok(())
    }
}

/// The published ports and the masquerade range they must stay out of.
pub struct Ports {
    db: Arc<Db>,
    records: Vec<PortRecord>,
    nat: RangeInclusive<u16>,
}

impl Ports {
    pub fn load(db: Arc<Db>, nat: RangeInclusive<u16>) -> Result<Self, StateError> {
        let records = db.ports()?;
        Ok(Ports { db, records, nat })
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

    /// Publishes `recs` in one transaction.
    pub fn insert_many(&mut self, recs: &[PortRecord]) -> Result<(), StateError> {
        self.db.write("ports", |tx| recs.iter().try_for_each(|r| tx.put_port(r)))?;
        self.records.extend_from_slice(recs);
        Ok(())
    }

    /// Unpublishes those of `keys` that are published, in one transaction; returns them.
    pub fn remove_many(
        &mut self,
        keys: &[(Proto, u16, Option<IpAddr>)],
    ) -> Result<Vec<PortRecord>, StateError> {
        let wanted: std::collections::HashSet<_> = keys.iter().copied().collect();
        let is_gone = |p: &PortRecord| wanted.contains(&(p.proto, p.host_port, p.host_ip));
        let gone: Vec<PortRecord> = self.records.iter().filter(|p| is_gone(p)).cloned().collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        self.db.write("ports", |tx| {
            gone.iter().try_for_each(|p| tx.del_port(p.proto, p.host_port, p.host_ip))
        })?;
        self.records.retain(|p| !is_gone(p));
        Ok(gone)
    }

    /// Keeps the ports of the endpoints `keep` says yes to; true when any went.
    pub fn retain_endpoints(&mut self, keep: impl Fn(&str) -> bool) -> Result<bool, StateError> {
        let gone: Vec<&PortRecord> = self.records.iter().filter(|p| !keep(&p.endpoint)).collect();
        if gone.is_empty() {
            return Ok(false);
        }
        self.db.write("ports", |tx| {
            gone.iter().try_for_each(|p| tx.del_port(p.proto, p.host_port, p.host_ip))
        })?;
        self.records.retain(|p| keep(&p.endpoint));
        Ok(true)
    }
}
