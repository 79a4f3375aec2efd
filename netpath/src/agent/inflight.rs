//! Endpoint changes in flight. Most of an endpoint add is kernel work that needs nothing
//! of the agent's (creating the veth pair, configuring the container's side), and most of
//! a delete is the kernel deleting the pair, waiting out RCU. The agent task checks and
//! claims (name, address), hands that work to a task of its own, and goes on with other
//! requests; the work's end comes back as a job, and the agent finishes the change
//! (datapath, state) and replies. A slow endpoint holds up no `port add` of another.
//!
//! Order is kept where it matters: a request about an endpoint with a change in flight
//! waits for it (in arrival order); requests that look at the whole node (reconcile,
//! apply, link events) wait until nothing is in flight, and everything that changes the
//! node after them waits behind them.
use std::{
    collections::{HashMap, VecDeque},
    net::Ipv4Addr,
};

use tokio::sync::mpsc;

use super::server::Job;
use crate::{api::Request, state::PortRecord};

#[derive(Default)]
pub struct InFlight {
    /// Endpoints with a change in flight, and what each holds: its address (an add's is
    /// not in the records yet, a delete's still has its route until the pair is gone)
    /// and the host ports an add will publish once built.
    held: HashMap<String, Held>,
    /// Adds parked behind the change of another endpoint (whose address they asked
    /// for): endpoint -> the endpoint it waits for. Requests about a parked endpoint wait
    /// for it as for one in flight.
    parked: HashMap<String, String>,
    /// Jobs about an endpoint in flight, per endpoint, in arrival order.
    waiting: HashMap<String, VecDeque<Job>>,
    /// Jobs that need nothing in flight, and those that came after them.
    barrier: VecDeque<Job>,
    /// Jobs free to run again, in order.
    ready: VecDeque<Job>,
    /// Where the work's ends are sent; None runs every change in the agent's task.
    done: Option<mpsc::Sender<Job>>,
}

struct Held {
    ip: Ipv4Addr,
    ip6: Option<std::net::Ipv6Addr>,
    ports: Vec<PortRecord>,
    /// The container's namespace and interface name: a delete's peer is still there
    /// until the pair is gone.
    place: (std::path::PathBuf, String),
}

/// Where a job goes.
pub enum Route {
    Now,
    /// After the change in flight of this endpoint.
    After(String),
    /// Once nothing is in flight.
    Barrier,
}

impl InFlight {
    pub fn serve(&mut self, done: mpsc::Sender<Job>) {
        self.done = Some(done);
    }

    /// The sender for a change's end, when changes run beside other requests.
    pub fn sender(&self) -> Option<mpsc::Sender<Job>> {
        self.done.clone()
    }

    /// The addresses held by changes in flight, of both families.
    pub fn held(&self) -> Vec<std::net::IpAddr> {
        self.held.values().flat_map(|h| [Some(h.ip.into()), h.ip6.map(Into::into)]).flatten().collect()
    }

    /// The host ports adds in flight will publish.
    pub fn held_ports(&self) -> Vec<PortRecord> {
        self.held.values().flat_map(|h| h.ports.iter().cloned()).collect()
    }

    pub fn is_idle(&self) -> bool {
        self.held.is_empty()
    }

    pub fn hold(&mut self, rec: &crate::state::EndpointRecord, ports: Vec<PortRecord>) {
        let place = (rec.netns.clone(), rec.ifname.clone());
        self.held.insert(rec.name.clone(), Held { ip: rec.ip, ip6: rec.ip6, ports, place });
    }

    /// The ports of `name`'s add are being published: no longer held apart.
    pub fn publishing(&mut self, name: &str) {
        if let Some(h) = self.held.get_mut(name) {
            h.ports.clear();
        }
    }

    /// The change of `name` is done: what waited for it may run, and when nothing is in
    /// flight any more, what waited for that.
    pub fn release(&mut self, name: &str) {
        self.held.remove(name);
        self.parked.retain(|_, behind| behind != name);
        if let Some(jobs) = self.waiting.remove(name) {
            self.ready.extend(jobs);
        }
        if self.held.is_empty() {
            self.ready.extend(self.barrier.drain(..));
        }
    }

    /// The next job free to run. Jobs that wait for an endpoint nothing holds any more
    /// (a parked add that ended without a change in flight) are freed here.
    pub fn next_ready(&mut self) -> Option<Job> {
        if self.ready.is_empty() {
            let orphans: Vec<String> = self
                .waiting
                .keys()
                .filter(|n| !self.held.contains_key(*n) && !self.parked.contains_key(*n))
                .cloned()
                .collect();
            for name in orphans {
                if let Some(jobs) = self.waiting.remove(&name) {
                    self.ready.extend(jobs);
                }
            }
        }
        self.ready.pop_front()
    }

    /// Every job still waiting, in no particular order (a stopping agent refuses them).
    pub fn drain(&mut self) -> Vec<Job> {
        let mut jobs: Vec<Job> = self.ready.drain(..).chain(self.barrier.drain(..)).collect();
        jobs.extend(self.waiting.drain().flat_map(|(_, q)| q));
        jobs
    }

    /// Where `job` goes now.
    pub fn route(&self, job: &Job) -> Route {
        let busy = |name: &str| self.held.contains_key(name) || self.parked.contains_key(name);
        let request = match job {
            Job::Request { request, .. } => request,
            // A change's end, a trace's end: always now. The store's node list writes
            // routes to other nodes only.
            Job::Built { .. }
            | Job::Unplumbed { .. }
            | Job::Lost { .. }
            | Job::TraceEnded { .. }
            | Job::Nodes(_) => return Route::Now,
            Job::Link(_) if self.held.is_empty() && self.barrier.is_empty() => return Route::Now,
            Job::Link(_) => return Route::Barrier,
        };
        let about = match request {
            // Reading what is committed.
            Request::Status | Request::EndpointList | Request::NodeList | Request::TraceStart(_) => {
                return Route::Now
            }
            Request::EndpointCheck { name, .. } => {
                return if busy(name) { Route::After(name.clone()) } else { Route::Now };
            }
            Request::EndpointAdd(spec) => {
                // An address asked for that a change in flight holds, or the interface
                // of a delete whose pair is still going: after that change, not refused.
                let holder = self.held.iter().find(|(_, h)| {
                    spec.ip == Some(h.ip)
                        || (spec.ip6.is_some() && spec.ip6 == h.ip6)
                        || (h.place.0 == spec.netns && h.place.1 == spec.ifname)
                });
                match holder {
                    Some((name, _)) if !busy(&spec.name) => Some(name.as_str()),
                    _ => Some(spec.name.as_str()),
                }
            }
            Request::EndpointDel { name, .. } => Some(name.as_str()),
            Request::PortAdd(spec) => Some(spec.endpoint.as_str()),
            Request::PortsAdd { ports } => ports
                .iter()
                .map(|p| p.endpoint.as_str())
                .find(|n| busy(n))
                .or(ports.first().map(|p| p.endpoint.as_str())),
            Request::PortDel { .. } | Request::PortsDel { .. } => None,
            Request::Apply { .. } | Request::Reconcile { .. } | Request::NodeDel { .. } => {
                return if self.held.is_empty() && self.barrier.is_empty() {
                    Route::Now
                } else {
                    Route::Barrier
                };
            }
        };
        if !self.barrier.is_empty() {
            return Route::Barrier;
        }
        match about {
            Some(name) if busy(name) => Route::After(name.to_string()),
            _ => Route::Now,
        }
    }

    pub fn wait(&mut self, route: Route, job: Job) {
        match route {
            Route::After(name) => {
                // An add parked behind another endpoint's change: its own endpoint waits
                // for it from now on.
                if let Job::Request { request: Request::EndpointAdd(spec), .. } = &job {
                    if spec.name != name {
                        self.parked.insert(spec.name.clone(), name.clone());
                    }
                }
                self.waiting.entry(name).or_default().push_back(job)
            }
            Route::Barrier => self.barrier.push_back(job),
            Route::Now => self.ready.push_back(job),
        }
    }
}
