//! Reading a guest's serial console: libtest's summaries, explicit skips, modules that
//! did not load, a preflight that failed, test binaries that died without a summary, the
//! end marker, and a kernel panic if there was one.

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The guest kernel's release (`uname -r`), from the begin marker.
    pub release: Option<String>,
    pub passed: u64,
    pub failed: u64,
    /// Tests that reported `netpath-test-skipped: kernel lacks X` (libtest counted them
    /// as passed; they are not).
    pub skipped: u64,
    pub skip_reasons: Vec<String>,
    pub failures: Vec<String>,
    /// What each failed test printed (libtest's `---- name stdout ----` section), so
    /// that a CI log says why without the guest's console.
    pub failure_output: Vec<(String, String)>,
    /// Test binaries that exited non-zero without a libtest summary (killed by their
    /// timeout, crashed): `name (exit N)`.
    pub binary_failures: Vec<String>,
    /// `name: insmod's error` for each module the guest could not load.
    pub module_failures: Vec<String>,
    /// `what: error` for each piece of the test labs the guest could not build.
    pub preflight_failures: Vec<String>,
    /// The guest reached the end of its test list.
    pub finished: bool,
    /// The last lines before a kernel panic.
    pub panic: Option<String>,
    /// Each finished test and its milliseconds (libtest's `--report-time`), in console
    /// order.
    pub times: Vec<(String, u64)>,
}

/// A test's result line without libtest's `--report-time` suffix (`ok <1.234s>`), and
/// the seconds it gives.
fn split_time(line: &str) -> (&str, Option<f64>) {
    let Some(open) = line.rfind(" <") else { return (line, None) };
    let secs = line[open + 2..].strip_suffix("s>").and_then(|t| t.parse().ok());
    match secs {
        Some(t) => (&line[..open], Some(t)),
        None => (line, None),
    }
}

fn count(part: &str, what: &str) -> Option<u64> {
    let part = part.trim();
    part.strip_suffix(what).and_then(|n| n.trim().rsplit(' ').next()).and_then(|n| n.parse().ok())
}

pub fn parse(log: &str) -> Outcome {
    let mut o = Outcome::default();
    let lines: Vec<&str> = log.lines().collect();
    // Whether the binary running now has printed its summary.
    let mut summary = false;
    // The failed test whose printed output is being read.
    let mut section: Option<(String, Vec<&str>)> = None;
    // Whether that output is a captured section (it holds the panic line too).
    let mut captured = false;
    for (i, raw) in lines.iter().enumerate() {
        let (line, secs) = split_time(raw.trim_end_matches('\r'));
        // Captured output comes in libtest's `---- name stdout ----` sections; with
        // --nocapture (the guests) a panic is printed where it happens, as `thread
        // 'name' panicked at ...` and the message's lines.
        let header = line.strip_prefix("---- ").and_then(|l| l.strip_suffix(" stdout ----"));
        // `thread 'name' panicked at`, or with the thread's id: `thread 'name' (811)
        // panicked at`.
        let panic = line
            .strip_prefix("thread '")
            .and_then(|l| l.split_once('\''))
            .filter(|(_, rest)| rest.contains(" panicked at "))
            .map(|(name, _)| name);
        let ends = header.is_some()
            || line == "failures:"
            || line.contains("test result: ")
            || (!captured
                && (panic.is_some()
                    || line.starts_with("note: run with `RUST_BACKTRACE")
                    || line.starts_with("test ")
                    || line.contains("NETPATH-VM-")));
        if section.is_some() && ends {
            let (name, body) = section.take().expect("checked");
            o.failure_output.push((name, body.join("\n").trim().to_string()));
        }
        if let Some(name) = header {
            section = Some((name.to_string(), Vec::new()));
            captured = true;
            continue;
        }
        if let (Some(name), None) = (panic, &section) {
            section = Some((name.to_string(), Vec::new()));
            captured = false;
        }
        if let Some((_, body)) = section.as_mut() {
            body.push(line);
        }
        if let (Some(t), Some(name)) =
            (secs, line.strip_prefix("test ").and_then(|l| l.split(" ... ").next()))
        {
            o.times.push((name.to_string(), (t * 1000.0) as u64));
        }
        if let Some(rest) = line.split("test result: ").nth(1) {
            summary = true;
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
        } else if let Some(rest) = line.split("NETPATH-VM-DONE ").nth(1) {
            let mut it = rest.split_whitespace();
            let (name, code) = (it.next().unwrap_or("?"), it.next().unwrap_or("?"));
            if code != "0" && !summary {
                let why = match code {
                    "124" | "143" => " (killed by its timeout)",
                    _ => "",
                };
                o.binary_failures.push(format!("{name} (exit {code}{why})"));
            }
            summary = false;
        } else if let Some(rest) = line.split("NETPATH-VM-MODULE-FAILED ").nth(1) {
            o.module_failures.push(rest.trim().to_string());
        } else if let Some(rest) = line.split("NETPATH-VM-PREFLIGHT-FAILED ").nth(1) {
            o.preflight_failures.push(rest.trim().to_string());
        } else if let Some(rest) = line.split("NETPATH-VM-BEGIN ").nth(1) {
            o.release = Some(rest.trim().to_string());
        } else if line.contains("NETPATH-VM-END") {
            o.finished = true;
        } else if line.contains("Kernel panic") && o.panic.is_none() {
            o.panic = Some(lines[i.saturating_sub(15)..=i].join("\n"));
        }
    }
    o.passed = o.passed.saturating_sub(o.skipped);
    o
}

/// At most `n` characters of `s` (a usage text can run to a screenful).
fn short(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

impl Outcome {
    /// The `n` slowest tests, slowest first: where a guest's time goes.
    pub fn slowest(&self, n: usize) -> Vec<(String, u64)> {
        let mut all = self.times.clone();
        all.sort_by_key(|t| std::cmp::Reverse(t.1));
        all.truncate(n);
        all
    }

    /// "ok", or what went wrong, first line the short form. `hung_after`: the guest was
    /// killed at its timeout after that many seconds.
    pub fn verdict(&self, hung_after: Option<u64>) -> String {
        if let Some(secs) = hung_after {
            return format!("HUNG after {secs} s (killed)");
        }
        if let Some(p) = &self.panic {
            return format!("KERNEL PANIC:\n{p}");
        }
        if !self.module_failures.is_empty() {
            let all: Vec<String> = self.module_failures.iter().map(|f| short(f, 160)).collect();
            return format!("MODULES DID NOT LOAD, no test run: {}", all.join("; "));
        }
        if !self.preflight_failures.is_empty() {
            return format!(
                "CANNOT BUILD THE TEST LABS, no test run: {}",
                self.preflight_failures.join("; ")
            );
        }
        if !self.finished {
            return "DID NOT FINISH (see console.log)".to_string();
        }
        if self.failed > 0 || !self.binary_failures.is_empty() {
            let all: Vec<&str> =
                self.failures.iter().chain(&self.binary_failures).map(String::as_str).collect();
            return format!("FAILED: {}", all.join(", "));
        }
        if self.passed + self.skipped == 0 {
            return "NO TEST RAN (does the filter match any test?)".to_string();
        }
        "ok".to_string()
    }

    /// How the datapath attaches tc programs on this guest's kernel: the product's own
    /// rule (`AttachMode::detect`: TCX from 6.6, clsact before).
    pub fn tc_attach(&self) -> &'static str {
        let Some(release) = &self.release else { return "?" };
        let mut it = release.split(['.', '-']).filter_map(|p| p.parse::<u32>().ok());
        if (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (6, 6) {
            "TCX"
        } else {
            "clsact"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_each_failed_test_printed() {
        let log = "running 2 tests\n\
            test a ... FAILED\n\
            test b ... FAILED\n\
            \n\
            failures:\n\
            \n\
            ---- a stdout ----\n\
            thread 'a' panicked at tests/tests/endpoint.rs:117:5:\n\
            agent did not stop\n\
            \n\
            ---- b stdout ----\n\
            [  12.3] kernel line\n\
            b's reason\n\
            \n\
            \n\
            failures:\n\
            \x20   a\n\
            \x20   b\n\
            \n\
            test result: FAILED. 0 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.2s\n";
        let o = parse(log);
        assert_eq!(o.failures, ["a", "b"]);
        assert_eq!(
            o.failure_output,
            [
                (
                    "a".to_string(),
                    "thread 'a' panicked at tests/tests/endpoint.rs:117:5:\nagent did not stop".to_string()
                ),
                ("b".to_string(), "[  12.3] kernel line\nb's reason".to_string()),
            ]
        );
    }

    #[test]
    fn keeps_a_panic_printed_without_capture() {
        let log = "running 2 tests\n\
            test a ... ok <1.0s>\n\
            thread 'b' (811) panicked at tests/tests/endpoint.rs:117:5:\n\
            agent did not stop within 120 s of SIGTERM\n\
            thread 1234 (netpath): S futex_wait\n\
            note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\
            test b ... FAILED <143.0s>\n\
            \n\
            failures:\n\
            \x20   b\n\
            \n\
            test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 144s\n";
        let o = parse(log);
        assert_eq!(o.failures, ["b"]);
        assert_eq!(o.failure_output.len(), 1, "{o:?}");
        assert_eq!(o.failure_output[0].0, "b");
        assert!(o.failure_output[0]
            .1
            .starts_with("thread 'b' (811) panicked at tests/tests/endpoint.rs:117:5:\nagent did not stop"));
        assert!(o.failure_output[0].1.ends_with("S futex_wait"), "{o:?}");
    }

    #[test]
    fn sums_libtest_summaries_and_takes_skips_out_of_the_passes() {
        let log = "NETPATH-VM-BEGIN 6.1.0-50-cloud-amd64\n\
            running 3 tests\n\
            test a ... ok\n\
            netpath-test-skipped: kernel lacks SO_NETNS_COOKIE (5.14)\n\
            test b ... ok\n\
            test c ... FAILED\n\
            test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.2s\n\
            NETPATH-VM-DONE nat 101\n\
            test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.3s\r\n\
            NETPATH-VM-DONE packet 0\n\
            NETPATH-VM-END\n";
        let o = parse(log);
        assert_eq!((o.passed, o.failed, o.skipped), (6, 1, 1));
        assert_eq!(o.failures, ["c"]);
        assert!(o.binary_failures.is_empty(), "{o:?}");
        assert_eq!(o.skip_reasons, ["kernel lacks SO_NETNS_COOKIE (5.14)"]);
        assert!(o.finished);
        assert!(o.panic.is_none());
        assert_eq!(o.release.as_deref(), Some("6.1.0-50-cloud-amd64"));
        assert_eq!(o.tc_attach(), "clsact");
        assert_eq!(o.verdict(None), "FAILED: c");
    }

    #[test]
    fn reports_a_panic_with_its_last_lines_and_an_unfinished_run() {
        let log = "booting\nsomething\nKernel panic - not syncing: VFS: Unable to mount root fs\n";
        let o = parse(log);
        assert!(!o.finished);
        assert!(o.panic.as_deref().unwrap().contains("Unable to mount root fs"));
        assert!(o.verdict(None).starts_with("KERNEL PANIC"));
        assert_eq!(parse("booting\n").verdict(None), "DID NOT FINISH (see console.log)");
        assert_eq!(parse("booting\n").verdict(Some(1800)), "HUNG after 1800 s (killed)");
    }

    #[test]
    fn a_module_that_did_not_load_is_the_verdict_not_the_tests() {
        let log = "NETPATH-VM-BEGIN 6.12.117+deb13-cloud-amd64\n\
            NETPATH-VM-MODULE-FAILED veth: insmod: can't insert 'kernel/drivers/net/veth.ko': invalid module format \n\
            NETPATH-VM-PREFLIGHT-FAILED veth: Error: Unknown device type. \n\
            NETPATH-VM-NOT-RUN: this kernel cannot build the test labs (see above); no test was run\n";
        let o = parse(log);
        assert_eq!(
            o.module_failures,
            ["veth: insmod: can't insert 'kernel/drivers/net/veth.ko': invalid module format"]
        );
        assert_eq!(o.preflight_failures, ["veth: Error: Unknown device type."]);
        let v = o.verdict(None);
        assert!(v.starts_with("MODULES DID NOT LOAD, no test run: veth: insmod"), "{v}");
        assert_eq!(o.tc_attach(), "TCX");
        // Modules loaded (a user's bzImage with everything built in, say) but a lab
        // piece missing.
        let o = parse("NETPATH-VM-PREFLIGHT-FAILED vxlan: Error: Unknown device type.\nNETPATH-VM-NOT-RUN\n");
        assert_eq!(
            o.verdict(None),
            "CANNOT BUILD THE TEST LABS, no test run: vxlan: Error: Unknown device type."
        );
    }

    #[test]
    fn report_time_suffixes_are_read_and_do_not_hide_a_failure() {
        let o = parse(
            "NETPATH-VM-BEGIN 6.1.0\n\
            test quick ... ok <0.500s>\n\
            test slow ... ok <61.250s>\n\
            test broken ... FAILED <2.000s>\n\
            test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 62s\n\
            NETPATH-VM-DONE nat 101\n\
            NETPATH-VM-END\n",
        );
        assert_eq!(o.verdict(None), "FAILED: broken");
        assert_eq!(o.slowest(2), [("slow".to_string(), 61_250), ("broken".to_string(), 2_000)]);
    }

    #[test]
    fn a_binary_that_dies_without_a_summary_is_a_failure() {
        let log = "running 2 tests\n\
            test soak_survives ... \n\
            NETPATH-VM-DONE soak 143\n\
            test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s\n\
            NETPATH-VM-DONE nat 0\n\
            NETPATH-VM-END\n";
        let o = parse(log);
        assert_eq!(o.binary_failures, ["soak (exit 143 (killed by its timeout))"]);
        assert_eq!(o.verdict(None), "FAILED: soak (exit 143 (killed by its timeout))");
    }

    #[test]
    fn a_run_in_which_no_test_ran_is_not_ok() {
        let log =
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 12 filtered out; finished in 0s\n\
            NETPATH-VM-DONE nat 0\nNETPATH-VM-END\n";
        assert!(parse(log).verdict(None).starts_with("NO TEST RAN"));
    }
}
