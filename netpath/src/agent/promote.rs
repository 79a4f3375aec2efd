//! `--endpoint-attach auto`: a veth endpoint is made with a clsact filter, which costs
//! the add two netlink messages, and moved to a TCX link, the cheaper hook per packet,
//! once the agent has been idle for a moment. A TCX link waits out an RCU grace period
//! under the RTNL lock (~13 ms here); done at the add, every add would wait for it, and
//! so would the adds behind it. Done when idle, one endpoint at a time, only a request
//! arriving during one promotion waits, for what is left of it.
use std::{collections::HashSet, time::Duration};

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Agent;
use crate::{
    datapath::{program, AttachMode},
    state::Device,
};

/// How long the agent must have had nothing to do before it promotes: longer than the
/// gaps within a burst of adds or deletes (a CLI start, a few ms), short enough that a
/// new endpoint runs on the cheaper hook well within a second.
const IDLE: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub(super) struct Promotions {
    /// Endpoints still in a filter, by name, looked at one per idle turn.
    queue: Vec<String>,
    /// The records changed since the queue was made: make it again.
    rescan: bool,
    /// When the agent last took a job.
    busy_at: Instant,
    /// Endpoints the kernel refused to promote (name, host ifindex): not tried again
    /// by this agent, which keeps them on their filter.
    refused: HashSet<(String, u32)>,
    /// Promoted since the queue last ran dry, for one log line.
    done: usize,
}

impl Promotions {
    pub(super) fn new() -> Self {
        Promotions {
            queue: Vec::new(),
            rescan: true,
            busy_at: Instant::now(),
            refused: HashSet::new(),
            done: 0,
        }
    }

    /// The agent took a job: whatever it changed, look again once idle.
    pub(super) fn busy(&mut self) {
        self.busy_at = Instant::now();
        self.rescan = true;
    }
}

impl Agent {
    /// When the next promotion is due, if there may be one: never while endpoint
    /// changes are in flight.
    pub(super) fn promotion_due(&self) -> Option<Instant> {
        let p = self.promotions.as_ref()?;
        (self.inflight.is_idle() && (p.rescan || !p.queue.is_empty())).then_some(p.busy_at + IDLE)
    }

    /// Moves one endpoint from its filter to a TCX link, if one is waiting.
    pub(super) async fn promote_next(&mut self) {
        let Some(p) = self.promotions.as_mut() else { return };
        if std::mem::take(&mut p.rescan) {
            let refused = &p.refused;
            p.queue = self
                .endpoints
                .all()
                .iter()
                .filter(|r| r.device == Device::Veth && !r.mode.is_subif())
                .filter(|r| !refused.contains(&(r.name.clone(), r.host_ifindex)))
                .filter(|r| !self.datapath.endpoint_in_tcx_link(r.host_ifindex))
                .map(|r| r.name.clone())
                .rev()
                .collect();
        }
        let Some(name) = p.queue.pop() else { return };
        let Some(rec) = self.endpoints.get(&name).cloned() else { return };
        // The name must still be the endpoint's device (the link goes on whatever the
        // name resolves to), and it must have its filter: a move, never a repair. An
        // endpoint whose attachment is gone is reconciliation's to find and report.
        match crate::plumbing::link::get(&self.netlink, &rec.host_ifname).await {
            Ok(Some(l)) if l.index == rec.host_ifindex => {}
            _ => return,
        }
        let filters = crate::datapath::tc_programs(
            &self.netlink,
            &rec.host_ifname,
            rec.host_ifindex,
            AttachMode::Clsact,
        )
        .await;
        if !filters.is_some_and(|f| f.iter().any(|p| p == program::FROM_CONTAINER)) {
            return;
        }
        let started = std::time::Instant::now();
        let p = self.promotions.as_mut().expect("checked above");
        match self.datapath.promote_endpoint(&rec.host_ifname, rec.host_ifindex) {
            Ok(true) => {
                p.done += 1;
                debug!(endpoint = %name, veth = %rec.host_ifname, ms = started.elapsed().as_millis() as u64,
                       "from_container moved to a TCX link");
            }
            Ok(false) => {}
            Err(e) => {
                warn!(endpoint = %name, "cannot move from_container to a TCX link: {e}; it stays on its clsact filter");
                p.refused.insert((name, rec.host_ifindex));
            }
        }
        if p.queue.is_empty() && !p.rescan && p.done > 0 {
            info!(endpoints = p.done, "endpoints moved to TCX links");
            p.done = 0;
        }
    }
}
