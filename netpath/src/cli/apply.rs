//! `netpath apply -f FILE` and `netpath export`: the node's declared endpoints and ports
//! as a file, TOML or JSON. Errors name the file's line: a parse error its own, a
//! refusal (by these checks or the agent's) the line where the entry at fault starts.
use std::path::Path;

use anyhow::bail;
use serde::Deserialize;

use super::{
    args::{FileFormat, Format},
    client,
};
use crate::{
    api::{DeclRef, EndpointDecl, NodeSpec, PortDecl, Reply, Request},
    paths::Paths,
};

/// A parsed file: the spec, and the line each entry starts on.
struct Located {
    spec: NodeSpec,
    endpoint_lines: Vec<usize>,
    port_lines: Vec<usize>,
}

impl Located {
    fn line(&self, entry: DeclRef) -> usize {
        match entry {
            DeclRef::Endpoint(i) => self.endpoint_lines.get(i).copied().unwrap_or(1),
            DeclRef::Port(i) => self.port_lines.get(i).copied().unwrap_or(1),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

fn parse_toml(text: &str) -> Result<Located, (usize, String)> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        endpoints: Vec<toml::Spanned<EndpointDecl>>,
        #[serde(default)]
        ports: Vec<toml::Spanned<PortDecl>>,
    }
    let file: File = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        (line, e.message().trim().replace('\n', "; "))
    })?;
    Ok(Located {
        endpoint_lines: file.endpoints.iter().map(|e| line_of(text, e.span().start)).collect(),
        port_lines: file.ports.iter().map(|p| line_of(text, p.span().start)).collect(),
        spec: NodeSpec {
            endpoints: file.endpoints.into_iter().map(toml::Spanned::into_inner).collect(),
            ports: file.ports.into_iter().map(toml::Spanned::into_inner).collect(),
        },
    })
}

fn parse_json(text: &str) -> Result<Located, (usize, String)> {
    use serde_json::value::RawValue;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File<'a> {
        #[serde(default, borrow)]
        endpoints: Vec<&'a RawValue>,
        #[serde(default, borrow)]
        ports: Vec<&'a RawValue>,
    }
    let whole = |e: serde_json::Error| (e.line().max(1), strip_position(&e));
    let file: File = serde_json::from_str(text).map_err(whole)?;
    // Each entry is a slice of `text`: where it starts is its line; an error inside it
    // counts its lines from there.
    let start = |raw: &RawValue| line_of(text, raw.get().as_ptr() as usize - text.as_ptr() as usize);
    let mut located = Located {
        spec: NodeSpec::default(),
        endpoint_lines: file.endpoints.iter().map(|r| start(r)).collect(),
        port_lines: file.ports.iter().map(|r| start(r)).collect(),
    };
    let within = |first: usize| move |e: serde_json::Error| (first + e.line().max(1) - 1, strip_position(&e));
    for (raw, first) in file.endpoints.iter().zip(located.endpoint_lines.clone()) {
        located.spec.endpoints.push(serde_json::from_str(raw.get()).map_err(within(first))?);
    }
    for (raw, first) in file.ports.iter().zip(located.port_lines.clone()) {
        located.spec.ports.push(serde_json::from_str(raw.get()).map_err(within(first))?);
    }
    Ok(located)
}

/// serde_json's message without its " at line L column C" (the caller names the line).
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn read(file: &Path) -> anyhow::Result<(String, String)> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        return Ok(("<stdin>".into(), text));
    }
    match std::fs::read_to_string(file) {
        Ok(text) => Ok((file.display().to_string(), text)),
        Err(e) => bail!("cannot read {}: {e}; give the path of a TOML or JSON file", file.display()),
    }
}

pub fn apply(paths: &Paths, file: &Path, dry_run: bool, output: Format) -> anyhow::Result<()> {
    let (name, text) = read(file)?;
    let json = match file.extension().and_then(|e| e.to_str()) {
        Some("json") => true,
        Some("toml") => false,
        _ => text.trim_start().starts_with('{'),
    };
    let located = match if json { parse_json(&text) } else { parse_toml(&text) } {
        Ok(l) => l,
        Err((line, message)) => bail!("{name}:{line}: {message}"),
    };
    let req = Request::Apply { spec: located.spec.clone(), dry_run };
    match client::call(paths, &req)? {
        Reply::Applied { dry_run, changes } => {
            if output == Format::Json {
                println!("{}", serde_json::json!({ "dry_run": dry_run, "changes": changes }));
                return Ok(());
            }
            for c in &changes {
                let sign = match c.op.as_str() {
                    "add" => '+',
                    "del" => '-',
                    _ => '~',
                };
                println!("{sign} {} {}", c.subject, c.detail);
            }
            match (changes.len(), dry_run) {
                (0, _) => println!("{name}: the node matches; nothing to do"),
                (n, true) => println!("{name}: {n} change(s) to make (dry run: nothing changed)"),
                (n, false) => println!("{name}: {n} change(s) applied"),
            }
            Ok(())
        }
        Reply::ApplyRefused { entry, message } => {
            bail!("{name}:{}: {message}; nothing was changed", located.line(entry))
        }
        Reply::ApplyFailed { entry, message, restored } => {
            let at = entry.map_or(String::new(), |e| format!("{}:", located.line(e)));
            if restored {
                bail!("{name}:{at} {message}; apply stopped there and put the node back as it was")
            }
            bail!(
                "{name}:{at} {message}; apply stopped there and could not put everything back \
                 (the agent's log says what): `netpath apply --dry-run -f {name}` shows where the node stands"
            )
        }
        other => client::unexpected(other),
    }
}

pub fn export(paths: &Paths, format: FileFormat) -> anyhow::Result<()> {
    let (endpoints, ports) = crate::state::read(paths)?;
    let spec = NodeSpec::of_state(&endpoints, &ports);
    match format {
        FileFormat::Toml => print!("{}", toml::to_string(&spec)?),
        FileFormat::Json => println!("{}", serde_json::to_string_pretty(&spec)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_ports_take_a_host_address_of_either_family_and_export_it_back() {
        let text = "[[ports]]\nhost_port = 8080\nendpoint = \"web\"\n\n[[ports]]\nhost_ip = \"::\"\nhost_port = 8081\nendpoint = \"web\"\n\n[[ports]]\nhost_ip = \"192.168.77.10\"\nhost_port = 8082\nendpoint = \"web\"\n";
        let located = parse_toml(text).unwrap_or_else(|(line, e)| panic!("line {line}: {e}"));
        let hosts: Vec<_> = located.spec.ports.iter().map(|p| p.host_ip).collect();
        assert_eq!(hosts, [None, Some("::".parse().unwrap()), Some("192.168.77.10".parse().unwrap())]);
        assert_eq!(located.port_lines, [1, 5, 10]);
        let exported = toml::to_string(&located.spec).unwrap();
        assert_eq!(parse_toml(&exported).map(|l| l.spec).ok(), Some(located.spec));
        let (line, e) =
            parse_toml("[[ports]]\nhost_ip = \"node\"\nhost_port = 1\nendpoint = \"web\"\n").err().unwrap();
        assert!(line == 2 && e.contains("invalid IP address syntax"), "{line}: {e}");
    }
}
