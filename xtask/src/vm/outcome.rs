//! Reading a guest's serial console: libtest's summaries, explicit skips, the end
//! marker, and a kernel panic if there was one.

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub passed: u64,
    pub failed: u64,
    /// Tests that reported `netpath-test-skipped: kernel lacks X` (libtest counted them
    /// as passed; they are not).
    pub skipped: u64,
    pub skip_reasons: Vec<String>,
    pub failures: Vec<String>,
    /// The guest reached the end of its test list.
    pub finished: bool,
    /// The last lines before a kernel panic.
    pub panic: Option<String>,
}

fn count(part: &str, what: &str) -> Option<u64> {
    let part = part.trim();
    part.strip_suffix(what).and_then(|n| n.trim().rsplit(' ').next()).and_then(|n| n.parse().ok())
}

pub fn parse(log: &str) -> Outcome {
    let mut o = Outcome::default();
    let lines: Vec<&str> = log.lines().collect();
    for (i, raw) in lines.iter().enumerate() {
        let line = raw.trim_end_matches('\r');
        if let Some(rest) = line.split("test result: ").nth(1) {
            for part in rest.split(';') {
                if let Some(n) = count(part, "passed") {
                    o.passed += n;
                }
                if let Some(n) = count(part, "failed") {
                    o.failed += n;
                }
            }
        } else if let Some(reason) = line.split("netpath-test-skipped: ").nth(1) {
            o.skipped += 1;
            o.skip_reasons.push(reason.trim().to_string());
        } else if line.starts_with("test ") && line.ends_with("... FAILED") {
            o.failures.push(line.trim_start_matches("test ").trim_end_matches(" ... FAILED").to_string());
        } else if line.contains("NETPATH-VM-END") {
            o.finished = true;
        } else if line.contains("Kernel panic") && o.panic.is_none() {
            o.panic = Some(lines[i.saturating_sub(15)..=i].join("\n"));
        }
    }
    o.passed = o.passed.saturating_sub(o.skipped);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_libtest_summaries_and_takes_skips_out_of_the_passes() {
        let log = "NETPATH-VM-BEGIN 6.1.0\n\
            running 3 tests\n\
            test a ... ok\n\
            netpath-test-skipped: kernel lacks SO_NETNS_COOKIE (5.14)\n\
            test b ... ok\n\
            test c ... FAILED\n\
            test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.2s\n\
            NETPATH-VM-DONE nat 101\n\
            test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.3s\r\n\
            NETPATH-VM-END\n";
        let o = parse(log);
        assert_eq!((o.passed, o.failed, o.skipped), (6, 1, 1));
        assert_eq!(o.failures, ["c"]);
        assert_eq!(o.skip_reasons, ["kernel lacks SO_NETNS_COOKIE (5.14)"]);
        assert!(o.finished);
        assert!(o.panic.is_none());
    }

    #[test]
    fn reports_a_panic_with_its_last_lines_and_an_unfinished_run() {
        let log = "booting\nsomething\nKernel panic - not syncing: VFS: Unable to mount root fs\n";
        let o = parse(log);
        assert!(!o.finished);
        assert!(o.panic.as_deref().unwrap().contains("Unable to mount root fs"));
    }
}
