//! Where the time of one endpoint change goes, step by step, logged with it: the
//! operator's and the benchmark's view of which kernel operation dominates (RCU waits
//! of TCX link creation and veth deletion, namespace entry, fsync).
use std::time::{Duration, Instant};

pub struct Steps {
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Default for Steps {
    fn default() -> Self {
        Steps { last: Instant::now(), done: Vec::new() }
    }
}

impl Steps {
    /// The step `name` ended now.
    pub fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.done.push((name, now - self.last));
        self.last = now;
    }
}

/// `veth:3.10,attach:8.02` (milliseconds), in the order the steps ran.
impl std::fmt::Display for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, d)) in self.done.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{name}:{:.2}", d.as_secs_f64() * 1e3)?;
        }
        Ok(())
    }
}

/// Test hook for the concurrency test, which needs one endpoint's kernel work to be
/// slow: with `NETPATH_SLOW_STEP=<step>:<ms>` in the agent's environment, step `step`
/// takes that much longer (an async sleep in the work's own task).
pub async fn slow_step(step: &str) {
    let Some(want) = std::env::var_os("NETPATH_SLOW_STEP") else { return };
    let want = want.to_string_lossy();
    if let Some(ms) = want.strip_prefix(step).and_then(|r| r.strip_prefix(':')).and_then(|m| m.parse().ok()) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}
