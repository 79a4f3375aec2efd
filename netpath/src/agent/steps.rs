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
    /// Starts timing a new change.
    pub fn restart(&mut self) {
        *self = Steps::default();
    }

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
