//! The datapath fuzzer: valid packets of every path, mutated and at random, through
//! every program with BPF_PROG_TEST_RUN, each result compared with the plain-Rust model
//! (`netpath_tests::model`): the action, the bytes, and at checkpoints the conntrack
//! table, the closed-flow records, every counter, and that the agent's maps are left as
//! the agent wrote them.
//!
//! Short mode (the default, in CI and the VM matrix): a fixed seed and a bounded count.
//! Long mode: `NETPATH_FUZZ_PACKETS=<n> NETPATH_FUZZ_SEED=<s>` (or `cargo xtask fuzz`).
//! A mismatch prints the seed, the packet in hex and both outcomes, ready to be pasted
//! into a regression case at the end of this file.
mod campaign;
mod mutate;
mod pressure;
mod world;

use campaign::Campaign;

/// The short mode's seed and count: enough to reach every path many times over, small
/// enough for well under a minute here and in the emulated VMs.
const CI_SEED: u64 = 0x6e70_f022;
const CI_PACKETS: u64 = 30_000;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v}: not a number")))
}

#[test]
fn fuzz_every_program_against_the_model() {
    let seed = env_u64("NETPATH_FUZZ_SEED").unwrap_or(CI_SEED);
    let packets = env_u64("NETPATH_FUZZ_PACKETS").unwrap_or(CI_PACKETS);
    netpath_tests::with_datapath_pins(world::PREPARE, move |dp, pins| {
        let mut c = Campaign::new(dp, pins, seed);
        c.run(packets);
        c.report();
    });
}

/// Regression cases: inputs the fuzzer found mismatching, replayed through the same
/// comparison (`Campaign::replay` fails on any difference from the model).
#[test]
fn fuzz_regressions_stay_fixed() {
    netpath_tests::with_datapath_pins(world::PREPARE, |dp, pins| {
        let mut c = Campaign::new(dp, pins, 0);
        for (hook, hex) in campaign::REGRESSIONS {
            c.replay(hook, hex);
        }
        c.checkpoint();
    });
}
