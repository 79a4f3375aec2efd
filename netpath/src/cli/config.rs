//! The agent's config file (`netpath agent --config FILE`, TOML). Its keys are the
//! agent's long flag names (`pod-cidr = "10.77.0.0/24"`, `xdp = true`,
//! `ct-max-entries = 65536`, `state-dir = "/var/lib/netpath"`), so there is one list
//! of settings, one set of parsers and one set of error messages. A flag or an
//! environment variable beats the file, the file beats the default.
//!
//! The file is checked whole before the agent starts: an unknown key, a value of the
//! wrong type or one its flag would refuse is one error line naming the key.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{parser::ValueSource, ArgAction, ArgMatches, CommandFactory as _};

use super::Cli;

/// `argv` with the settings of the agent's config file appended as flags, when the
/// command is `agent --config FILE`; unchanged otherwise. Err: one line for the user.
pub fn apply(argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let cmd = Cli::command();
    // A command line clap refuses is left for the real parse to report.
    let Ok(matches) = cmd.clone().try_get_matches_from(&argv) else { return Ok(argv) };
    let Some(("agent", agent)) = matches.subcommand() else { return Ok(argv) };
    let Some(path) = agent.get_one::<PathBuf>("config") else { return Ok(argv) };
    let extra = settings(path, &matches, agent)?;
    Ok(argv.into_iter().chain(extra.into_iter().map(OsString::from)).collect())
}

/// The flags the file sets that neither the command line nor the environment does.
fn settings(path: &Path, top: &ArgMatches, agent: &ArgMatches) -> Result<Vec<String>, String> {
    let cmd = Cli::command();
    let agent_cmd = cmd.find_subcommand("agent").expect("the agent subcommand");
    let bad = |what: String| format!("config file {}: {what}", path.display());
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map_or(0, |s| text[..s.start].lines().count().max(1));
        bad(format!("line {line}: {}", e.message().trim()))
    })?;
    // Settings a file may hold: the agent's own flags and the global directories.
    let known: Vec<(&clap::Arg, &ArgMatches)> = agent_cmd
        .get_arguments()
        .map(|a| (a, agent))
        .chain(cmd.get_arguments().filter(|a| a.is_global_set()).map(|a| (a, top)))
        .filter(|(a, _)| a.get_long().is_some_and(|l| !["config", "help", "version"].contains(&l)))
        .collect();
    let mut extra = Vec::new();
    for (key, value) in &table {
        let Some((arg, matches)) = known.iter().find(|(a, _)| a.get_long() == Some(key.as_str())) else {
            let names: Vec<&str> = known.iter().filter_map(|(a, _)| a.get_long()).collect();
            return Err(bad(format!("unknown key `{key}`; the keys are {}", names.join(", "))));
        };
        let is_flag = matches!(arg.get_action(), ArgAction::SetTrue);
        let text = match value {
            toml::Value::Boolean(b) if is_flag => b.to_string(),
            _ if is_flag => return Err(bad(format!("`{key}` must be true or false, not {value}"))),
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            // A setting that takes true or false as its value (`masquerade6 = false`).
            toml::Value::Boolean(b) => b.to_string(),
            _ => return Err(bad(format!("`{key}` must be a string or a number, not {value}"))),
        };
        if !is_flag {
            // The flag's own parser, so the file gets exactly the flag's checks.
            let probe = ["netpath".to_string(), "agent".into(), format!("--{key}={text}")];
            // Alone in the probe, a setting that needs another (cluster-cidr needs store)
            // misses it: that is for the real parse, with every setting, to judge.
            let probed = cmd.clone().try_get_matches_from(probe);
            probed
                .or_else(|e| match e.kind() {
                    clap::error::ErrorKind::MissingRequiredArgument => Ok(ArgMatches::default()),
                    _ => Err(e),
                })
                .map_err(|e| {
                    let msg = e.to_string();
                    let first = msg.lines().next().unwrap_or_default().trim_start_matches("error: ");
                    bad(format!("`{key}`: {first}"))
                })?;
        }
        let id = arg.get_id().as_str();
        if !matches!(matches.value_source(id), None | Some(ValueSource::DefaultValue)) {
            continue;
        }
        match (is_flag, value.as_bool()) {
            (true, Some(true)) => extra.push(format!("--{key}")),
            (true, _) => {}
            (false, _) => extra.push(format!("--{key}={text}")),
        }
    }
    Ok(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(body: &str, args: &[&str]) -> Result<Vec<String>, String> {
        let path =
            std::env::temp_dir().join(format!("netpath-config-{}-{}.toml", std::process::id(), body.len()));
        std::fs::write(&path, body).unwrap();
        let mut argv: Vec<OsString> =
            vec!["netpath".into(), "agent".into(), "--config".into(), path.clone().into()];
        argv.extend(args.iter().map(OsString::from));
        let out = apply(argv);
        std::fs::remove_file(&path).unwrap();
        out.map(|v| v.into_iter().skip(4 + args.len()).map(|s| s.into_string().unwrap()).collect())
    }

    #[test]
    fn settings_that_need_others_and_boolean_values_are_taken() {
        let body = "pod-cidr6 = \"fd00:77::/64\"\nmasquerade6 = false\nnode-name = \"n1\"\n\
                    store = \"etcd://127.0.0.1:2379\"\ncluster-cidr = \"10.80.0.0/16\"\n\
                    cluster-cidr6 = \"fd00:80::/48\"\n";
        let mut got = with_file(body, &[]).unwrap();
        got.sort();
        assert_eq!(
            got,
            [
                "--cluster-cidr6=fd00:80::/48",
                "--cluster-cidr=10.80.0.0/16",
                "--masquerade6=false",
                "--node-name=n1",
                "--pod-cidr6=fd00:77::/64",
                "--store=etcd://127.0.0.1:2379"
            ]
        );
        let err = with_file("masquerade6 = \"maybe\"\n", &[]).unwrap_err();
        assert!(err.contains("`masquerade6`") && err.contains("maybe"), "{err}");
    }

    #[test]
    fn settings_become_flags_unless_the_command_line_sets_them() {
        let body = "pod-cidr = \"10.99.0.0/24\"\nxdp = true\nct-max-entries = 4096\nstate-dir = \"/tmp/s\"\n\
                    device = \"netkit\"\n";
        let mut got = with_file(body, &[]).unwrap();
        got.sort();
        assert_eq!(
            got,
            [
                "--ct-max-entries=4096",
                "--device=netkit",
                "--pod-cidr=10.99.0.0/24",
                "--state-dir=/tmp/s",
                "--xdp"
            ]
        );
        let got = with_file(body, &["--pod-cidr", "10.98.0.0/24", "--xdp"]).unwrap();
        assert!(!got.iter().any(|a| a.starts_with("--pod-cidr") || a == "--xdp"), "{got:?}");
    }

    #[test]
    fn masquerade_takes_true_or_false_as_masquerade6_does() {
        let got = with_file("masquerade = false  # IPv4 on a routed prefix\n", &[]).unwrap();
        assert_eq!(got, ["--masquerade=false"]);
    }

    #[test]
    fn unknown_keys_wrong_types_and_bad_values_are_refused_by_name() {
        for (body, want) in [
            ("podcidr = \"10.99.0.0/24\"\n", &["unknown key `podcidr`", "pod-cidr"][..]),
            ("xdp = \"yes\"\n", &["`xdp` must be true or false"]),
            ("ct-max-entries = \"many\"\n", &["`ct-max-entries`", "many"]),
            ("pod-cidr = \"10.99.0.0/31\"\n", &["`pod-cidr`", "/30 or larger"]),
            ("mode = [\"routed\"]\n", &["`mode` must be a string"]),
            ("device = \"macvlan\"\n", &["`device`", "macvlan"]),
            ("masquerade = \"maybe\"\n", &["`masquerade`", "maybe"]),
            ("pod-cidr = \n", &["line 1"]),
        ] {
            let err = with_file(body, &[]).unwrap_err();
            assert!(want.iter().all(|w| err.contains(w)), "{body:?}: {err}");
            assert!(!err.contains('\n'), "not one line: {err}");
        }
    }
}
