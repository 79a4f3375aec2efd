//! The datapath's log records (aya-log: rare events only, see netpath-ebpf's `rare`),
//! read from their ring buffer as they come and written to the agent's log through the
//! `log` facade, which tracing-subscriber forwards to the agent's output.
use netpath_common::{contract::program::LOG_RARE, maps};
use tokio::io::{unix::AsyncFd, Interest};
use tracing::warn;

use super::{Datapath, DatapathError};

impl Datapath {
    /// Starts forwarding the programs' log records to the agent's log, on the current
    /// tokio runtime, for as long as it runs. The task owns the ring buffer: programs
    /// verified later (cluster mode, XDP) refer to the map by its fd, which must stay open.
    /// Also loads `log_rare` into the programs' tail-call slot: until then they drop
    /// their rare packets unlogged.
    pub fn forward_logs(&mut self) -> Result<(), DatapathError> {
        self.classifier(LOG_RARE)?
            .load()
            .map_err(|source| DatapathError::Verify { prog: LOG_RARE, source: Box::new(source) })?;
        self.fill_slot(maps::RARE_PROGS, maps::TAIL_LOG_RARE, LOG_RARE)?;
        let logger = aya_log::EbpfLogger::init(&mut self.ebpf)
            .map_err(|_| DatapathError::MissingMap(netpath_common::maps::AYA_LOGS))?;
        // SAFETY: the logger owns the ring buffer's fd and keeps it, unchanged, until it
        // is dropped, which only the AsyncFd does.
        let mut logger = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
            .map_err(|e| DatapathError::Logs { source: e.into_parts().1 })?;
        tokio::spawn(async move {
            loop {
                match logger.readable_mut().await {
                    Ok(mut ready) => {
                        ready.get_inner_mut().flush();
                        ready.clear_ready();
                    }
                    Err(e) => {
                        warn!("the datapath's log records can no longer be read: {e}");
                        // Kept open: the programs' map references must stay valid.
                        std::future::pending::<()>().await;
                    }
                }
            }
        });
        Ok(())
    }
}
