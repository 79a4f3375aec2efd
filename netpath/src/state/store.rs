//! The JSON files agents kept their records in before the database (see `db`), one list
//! per file, read once to migrate them; and the crash-safe whole-file write that small
//! files (the agent's identity) still use.
use std::{
    fs,
    io::Write as _,
    marker::PhantomData,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use serde::{de::DeserializeOwned, Serialize};

use super::StateError;

pub struct Store<T> {
    path: PathBuf,
    _t: PhantomData<T>,
}

impl<T: Serialize + DeserializeOwned> Store<T> {
    pub fn new(path: PathBuf) -> Self {
        Self { path, _t: PhantomData }
    }

    /// The stored records; none when the file does not exist yet.
    pub fn load(&self) -> Result<Vec<T>, StateError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StateError::Read { path: self.path.clone(), source }),
        };
        serde_json::from_slice(&bytes)
            .map_err(|source| StateError::Corrupt { path: self.path.clone(), source })
    }

    /// Writes the records as an older agent did (the migration's tests).
    #[cfg(test)]
    pub fn save(&self, records: &[T]) -> Result<(), StateError> {
        let body = serde_json::to_vec_pretty(records)
            .map_err(|e| StateError::Write { path: self.path.clone(), source: e.into() })?;
        write_atomically(&self.path, &body)
    }
}

/// Writes `path` so that a crash at any step leaves the old content or the new one: a
/// temporary file, fsynced, renamed over `path`, the directory fsynced. Root only, like
/// everything netpath keeps.
pub(super) fn write_atomically(path: &Path, body: &[u8]) -> Result<(), StateError> {
    let err = |source| StateError::Write { path: path.into(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::paths::create_private_dir(dir).map_err(err)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
    f.write_all(body).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)?;
    // The rename is only durable once the directory entry is on disk.
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::EndpointRecord;

    #[test]
    fn missing_file_is_empty_and_saves_round_trip() {
        let dir = std::env::temp_dir().join(format!("netpath-store-{}", std::process::id()));
        let store = Store::<EndpointRecord>::new(dir.join("endpoints.json"));
        assert!(store.load().unwrap().is_empty());
        let rec = EndpointRecord {
            name: "web".into(),
            mode: super::super::Mode::Routed,
            device: super::super::Device::Veth,
            netns: "/run/netns/web".into(),
            ifname: "eth0".into(),
            ip: "10.77.0.2".parse().unwrap(),
            gateway: "10.77.0.1".parse().unwrap(),
            ip6: None,
            mac: "0a:58:0a:4d:00:02".into(),
            mtu: 1500,
            host_ifname: "npabc".into(),
            host_ifindex: 7,
            host_mac: "0e:00:00:00:00:01".into(),
            owner: Some("4f1c0ffee".into()),
            parent: None,
            ipvlan_mode: None,
            prefix: None,
        };
        store.save(std::slice::from_ref(&rec)).unwrap();
        assert_eq!(store.load().unwrap(), vec![rec]);
        fs::write(&store.path, b"{not json").unwrap();
        let err = store.load().unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }
}
