//! The desired state in one SQLite database (`state.db`): a change writes only the rows it
//! touches, in one transaction, durably (WAL, synchronous=FULL: the commit is on disk when
//! the call returns). Before it, every change rewrote and fsynced a whole JSON file, so a
//! node's ten-thousandth port cost a hundred times its first.
//!
//! SQLite rather than a Rust key-value store: the CLI reads the state while the agent
//! writes it (`endpoint list`, `doctor`, the metrics scrape), and WAL gives those readers
//! a consistent snapshot from other processes without blocking the writer, which is what
//! SQLite has been tested for longest. The bundled build pins its version.
//!
//! Records are kept as JSON in their rows, as they were in the files: the serde
//! attributes that let old records load keep working, with no schema migrations.
use std::{
    net::IpAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};
use serde::{de::DeserializeOwned, Serialize};

use super::{store, EndpointRecord, PortRecord, Proto, StateError};
use crate::paths::Paths;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS endpoints (name TEXT PRIMARY KEY, record TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS ports (key TEXT PRIMARY KEY, endpoint TEXT NOT NULL, record TEXT NOT NULL);
";

/// The steps of a transaction that `NETPATH_CRASH_AT=<what>:<step>` can stop at, in
/// order; `what` is `endpoints`, `ports` or `migrate`. Only `committed` has the change.
pub const TX_STEPS: [&str; 3] = ["begun", "written", "committed"];

/// The agent's handle: one connection, shared by the endpoint and port collections so a
/// change of both is one transaction.
pub struct Db {
    path: PathBuf,
    conn: Mutex<Connection>,
}

/// The writes of one transaction.
pub struct Tx<'a> {
    path: &'a Path,
    tx: rusqlite::Transaction<'a>,
}

impl Db {
    /// Opens (creating) the node's database, and takes over the JSON files of an older
    /// agent the first time.
    pub fn open(paths: &Paths) -> Result<Arc<Db>, StateError> {
        let path = paths.state_db();
        let dir_err = |source| StateError::Write { path: path.clone(), source };
        crate::paths::create_private_dir(&paths.state_dir).map_err(dir_err)?;
        // Created root-only before SQLite opens it: its -wal and -shm files take its mode.
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&path).map_err(dir_err)?;
        let err = db_err(&path);
        let conn = Connection::open(&path).map_err(err)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)).map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let db = Db { path, conn: Mutex::new(conn) };
        db.migrate(paths)?;
        Ok(Arc::new(db))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn endpoints(&self) -> Result<Vec<EndpointRecord>, StateError> {
        rows(&self.conn(), &self.path, "SELECT record FROM endpoints ORDER BY rowid")
    }

    pub fn ports(&self) -> Result<Vec<PortRecord>, StateError> {
        rows(&self.conn(), &self.path, "SELECT record FROM ports ORDER BY rowid")
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding it left no transaction open (its guard rolled back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `change` in one write transaction, committed when it returns `Ok` and rolled
    /// back otherwise. `what` names the change for the crash test's hook.
    pub fn write<T>(
        &self,
        what: &str,
        change: impl FnOnce(&Tx<'_>) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let mut conn = self.conn();
        let err = db_err(&self.path);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        crash_point(what, "begun");
        let tx = Tx { path: &self.path, tx };
        let out = change(&tx)?;
        crash_point(what, "written");
        tx.tx.commit().map_err(err)?;
        crash_point(what, "committed");
        Ok(out)
    }

    /// The JSON files of agents before the database, read into it in one transaction;
    /// they are renamed `*.migrated` once the agent has started ([`Db::finish_migration`]).
    /// Files still there are always newer than the database (an older agent wrote them
    /// after the last migration, or the start that read them failed or crashed): each
    /// replaces its table. The one exception is a file this database already took in,
    /// byte for byte the same file (its fingerprint is kept in `meta`): its rename failed
    /// after that start, and reading it again would undo every change made since.
    fn migrate(&self, paths: &Paths) -> Result<(), StateError> {
        let legacy = [paths.state_file(), paths.ports_file()];
        let mut fresh = [None, None];
        for (file, print) in legacy.iter().zip(fresh.iter_mut()) {
            if let Some(p) = fingerprint(file) {
                if self.meta(&meta_key(file))?.as_deref() != Some(p.as_str()) {
                    *print = Some(p);
                } else {
                    tracing::warn!(file = %file.display(), "already migrated (its rename failed): not read again");
                }
            }
        }
        if fresh.iter().all(Option::is_none) {
            return Ok(());
        }
        let endpoints = match fresh[0] {
            Some(_) => store::Store::<EndpointRecord>::new(legacy[0].clone()).load()?,
            None => Vec::new(),
        };
        let ports = match fresh[1] {
            Some(_) => store::Store::<PortRecord>::new(legacy[1].clone()).load()?,
            None => Vec::new(),
        };
        self.write("migrate", |tx| {
            if fresh[0].is_some() {
                tx.exec("DELETE FROM endpoints", [])?;
            }
            if fresh[1].is_some() {
                tx.exec("DELETE FROM ports", [])?;
            }
            for e in &endpoints {
                tx.put_endpoint(e)?;
            }
            for p in &ports {
                tx.put_port(p)?;
            }
            for (file, print) in legacy.iter().zip(&fresh) {
                if let Some(print) = print {
                    tx.exec(
                        "INSERT INTO meta (key, value) VALUES (?1, ?2)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        params![meta_key(file), print],
                    )?;
                }
            }
            Ok(())
        })?;
        tracing::info!(endpoints = endpoints.len(), ports = ports.len(), db = %self.path.display(),
                       "state migrated from the JSON files");
        Ok(())
    }

    /// A value the agent keeps about the node besides its records (`meta`).
    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        use rusqlite::OptionalExtension as _;
        self.conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(db_err(&self.path))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.write("meta", |tx| {
            tx.exec(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
        })
    }

    /// Sets the migrated JSON files aside (kept for the operator, read never again).
    pub fn finish_migration(&self, paths: &Paths) -> Result<(), StateError> {
        for file in [paths.state_file(), paths.ports_file()].iter().filter(|f| f.exists()) {
            let mut to = file.clone().into_os_string();
            to.push(".migrated");
            std::fs::rename(file, &to).map_err(|source| StateError::Write { path: file.clone(), source })?;
        }
        Ok(())
    }

    /// Removes a database a failed start created, and the state directory when that
    /// leaves it empty: a refused start leaves no file behind. The JSON files it may
    /// have read stay where they were.
    pub fn discard(paths: &Paths) {
        for suffix in ["", "-wal", "-shm"] {
            let mut f = paths.state_db().into_os_string();
            f.push(suffix);
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir(&paths.state_dir);
    }
}

impl Tx<'_> {
    /// Adds or replaces the endpoint of the record's name.
    pub fn put_endpoint(&self, rec: &EndpointRecord) -> Result<(), StateError> {
        let json = to_json(self.path, rec)?;
        // An upsert, not INSERT OR REPLACE: that deletes and re-inserts, and the row would
        // move to the end of the listing order.
        self.exec(
            "INSERT INTO endpoints (name, record) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET record = excluded.record",
            params![rec.name, json],
        )
    }

    pub fn del_endpoint(&self, name: &str) -> Result<(), StateError> {
        self.exec("DELETE FROM endpoints WHERE name = ?1", [name])
    }

    /// Adds or replaces the port of the record's protocol, host address and port.
    pub fn put_port(&self, rec: &PortRecord) -> Result<(), StateError> {
        let json = to_json(self.path, rec)?;
        self.exec(
            "INSERT INTO ports (key, endpoint, record) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET endpoint = excluded.endpoint, record = excluded.record",
            params![port_key(rec.proto, rec.host_port, rec.host_ip), rec.endpoint, json],
        )
    }

    pub fn del_port(&self, proto: Proto, host_port: u16, host_ip: Option<IpAddr>) -> Result<(), StateError> {
        self.exec("DELETE FROM ports WHERE key = ?1", [port_key(proto, host_port, host_ip)])
    }

    fn exec(&self, sql: &str, params: impl rusqlite::Params) -> Result<(), StateError> {
        self.tx.execute(sql, params).map(|_| ()).map_err(db_err(self.path))
    }
}

/// What the node's state holds, read by a process other than the agent (the CLI, the
/// metrics scrape): from a read-only snapshot of the database, or from the JSON files
/// of an older agent that has not been restarted since the upgrade. Empty when neither
/// exists yet.
pub fn read(paths: &Paths) -> Result<(Vec<EndpointRecord>, Vec<PortRecord>), StateError> {
    let path = paths.state_db();
    if !path.exists() {
        let endpoints = store::Store::new(paths.state_file()).load()?;
        return Ok((endpoints, store::Store::new(paths.ports_file()).load()?));
    }
    let err = db_err(&path);
    let mut conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
    // One read transaction: the endpoints and ports of the same commit.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(err)?;
    let endpoints = rows(&tx, &path, "SELECT record FROM endpoints ORDER BY rowid")?;
    let ports = rows(&tx, &path, "SELECT record FROM ports ORDER BY rowid")?;
    Ok((endpoints, ports))
}

/// Which file a migration took in, as `meta` keeps it.
fn meta_key(file: &Path) -> String {
    format!("migrated:{}", file.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
}

/// Names one version of a file: a state file is replaced by a rename on every write, so
/// a rewritten file has another inode (and, mostly, another size and time).
fn fingerprint(file: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(file).ok()?;
    Some(format!("ino={} size={} mtime={}.{:09}", m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// The row's key: an IPv6 host address has colons, an IPv4 one none, so the two
/// families' keys never meet.
fn port_key(proto: Proto, host_port: u16, host_ip: Option<IpAddr>) -> String {
    match host_ip {
        Some(ip) => format!("{proto}/{ip}/{host_port}"),
        None => format!("{proto}/*/{host_port}"),
    }
}

fn rows<T: DeserializeOwned>(conn: &Connection, path: &Path, sql: &str) -> Result<Vec<T>, StateError> {
    let err = db_err(path);
    let mut stmt = conn.prepare(sql).map_err(err)?;
    let texts = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(err)?;
    texts
        .map(|t| {
            let t = t.map_err(err)?;
            serde_json::from_str(&t).map_err(|source| StateError::Corrupt { path: path.into(), source })
        })
        .collect()
}

fn to_json(path: &Path, rec: &impl Serialize) -> Result<String, StateError> {
    serde_json::to_string(rec).map_err(|e| StateError::Write { path: path.into(), source: e.into() })
}

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> StateError + Copy + '_ {
    move |source| StateError::Db { path: path.into(), source }
}

/// Test hook for the crash-safety test, which kills the agent at every step of a
/// transaction: with `NETPATH_CRASH_AT=<what>:<step>` in its environment the process
/// sends itself SIGKILL there, as abruptly as a power cut stops it.
fn crash_point(what: &str, step: &str) {
    let Some(want) = std::env::var_os("NETPATH_CRASH_AT") else { return };
    if want.to_string_lossy() == format!("{what}:{step}") {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn paths(tag: &str) -> Paths {
        let dir = std::env::temp_dir().join(format!("netpath-db-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Paths { bpffs_dir: dir.join("bpf"), run_dir: dir.join("run"), state_dir: dir.join("state") }
    }

    fn endpoint(name: &str, last: u8) -> EndpointRecord {
        EndpointRecord {
            name: name.into(),
            mode: super::super::Mode::Routed,
            device: super::super::Device::Veth,
            netns: format!("/run/netns/{name}").into(),
            ifname: "eth0".into(),
            ip: Ipv4Addr::new(10, 77, 0, last),
            gateway: "10.77.0.1".parse().unwrap(),
            ip6: None,
            mac: "0a:58:0a:4d:00:02".into(),
            mtu: 1500,
            host_ifname: format!("np{name}"),
            host_ifindex: 7,
            host_mac: "0e:00:00:00:00:01".into(),
            owner: None,
            parent: None,
            ipvlan_mode: None,
            prefix: None,
        }
    }

    fn port(endpoint: &str, host_port: u16) -> PortRecord {
        PortRecord {
            proto: Proto::Tcp,
            host_ip: None,
            host_port,
            endpoint: endpoint.into(),
            container_ip: Ipv4Addr::new(10, 77, 0, 2),
            container_ip6: None,
            container_port: 80,
        }
    }

    #[test]
    fn changes_commit_or_roll_back_whole_and_readers_see_commits() {
        let paths = paths("tx");
        let db = Db::open(&paths).unwrap();
        db.write("endpoints", |tx| {
            tx.put_endpoint(&endpoint("web", 2))?;
            tx.put_port(&port("web", 8080))
        })
        .unwrap();
        // A failing change leaves nothing of itself.
        let failed = db.write("ports", |tx| {
            tx.put_port(&port("web", 8081))?;
            Err::<(), _>(StateError::Exhausted { cidr: "10.77.0.0/24".parse().unwrap() })
        });
        assert!(failed.is_err());
        assert_eq!(db.ports().unwrap(), vec![port("web", 8080)]);
        // Another process's view (a read-only connection), while the agent's is open.
        let (eps, ports) = read(&paths).unwrap();
        assert_eq!(eps, vec![endpoint("web", 2)]);
        assert_eq!(ports, vec![port("web", 8080)]);
        db.write("ports", |tx| tx.del_port(Proto::Tcp, 8080, None)).unwrap();
        assert!(read(&paths).unwrap().1.is_empty());
        let _ = std::fs::remove_dir_all(paths.state_dir.parent().unwrap());
    }

    #[test]
    fn json_files_of_an_older_agent_are_migrated_once() {
        let paths = paths("migrate");
        let legacy_eps = store::Store::new(paths.state_file());
        legacy_eps.save(&[endpoint("web", 2), endpoint("db", 3)]).unwrap();
        store::Store::new(paths.ports_file()).save(&[port("web", 8080)]).unwrap();
        // Readers see the files before any agent migrated them.
        assert_eq!(read(&paths).unwrap().0.len(), 2);
        let db = Db::open(&paths).unwrap();
        assert_eq!(db.endpoints().unwrap(), vec![endpoint("web", 2), endpoint("db", 3)]);
        assert_eq!(db.ports().unwrap(), vec![port("web", 8080)]);
        db.finish_migration(&paths).unwrap();
        assert!(!paths.state_file().exists() && !paths.ports_file().exists());
        assert!(paths.state_dir.join("endpoints.json.migrated").exists());
        drop(db);
        // Opened again: nothing to migrate, nothing changes.
        assert_eq!(Db::open(&paths).unwrap().endpoints().unwrap().len(), 2);
        // A JSON file that shows up again (a downgraded agent ran since) is the newer state.
        legacy_eps.save(&[endpoint("old", 9)]).unwrap();
        let db = Db::open(&paths).unwrap();
        db.finish_migration(&paths).unwrap();
        assert_eq!(db.endpoints().unwrap(), vec![endpoint("old", 9)]);
        assert_eq!(db.ports().unwrap(), vec![port("web", 8080)], "a table without a file is kept");
        drop(db);
        let _ = std::fs::remove_dir_all(paths.state_dir.parent().unwrap());
    }

    #[test]
    fn a_migrated_file_whose_rename_failed_is_not_read_again() {
        let paths = paths("rename-failed");
        store::Store::new(paths.state_file()).save(&[endpoint("web", 2)]).unwrap();
        let db = Db::open(&paths).unwrap();
        // finish_migration failed: the file stays; the agent goes on changing the state.
        db.write("endpoints", |tx| tx.put_endpoint(&endpoint("db", 3))).unwrap();
        drop(db);
        let db = Db::open(&paths).unwrap();
        assert_eq!(db.endpoints().unwrap(), vec![endpoint("web", 2), endpoint("db", 3)]);
        drop(db);
        // Rewritten by an older agent (a new file by rename): newer than the database.
        store::Store::new(paths.state_file()).save(&[endpoint("old", 9)]).unwrap();
        assert_eq!(Db::open(&paths).unwrap().endpoints().unwrap(), vec![endpoint("old", 9)]);
        let _ = std::fs::remove_dir_all(paths.state_dir.parent().unwrap());
    }
}
