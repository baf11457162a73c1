//! The DC's persistent enrolment state: which key holds which name and address.
//!
//! Kept in an embedded redb file so a DC restart, or a SIGKILL in the middle of
//! an enrolment, never moves a node's address or hands one out twice: every
//! enrolment is one write transaction that commits durably before it returns.
//!
//! Layout (schema version 1):
//! - `nodes`: public key (32 bytes) -> postcard-encoded [`StoredRecord`]
//! - `names`: name -> public key
//! - `ips`: virtual IPv4 as `u32` -> public key
//! - `alloc_floor`: prefix text -> lowest host address in that prefix that may
//!   still be free, so allocation skips the dense, already-used front of the
//!   prefix instead of rescanning it on each enrolment
//! - `meta`: `"schema_version"` -> u64, so later layouts can migrate old files

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use redb::backends::InMemoryBackend;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, KEY_LEN};

/// Name of the database file inside the state directory.
pub const DB_FILE: &str = "dc.redb";

/// Layout version this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

const SCHEMA_KEY: &str = "schema_version";

type KeyBytes = [u8; KEY_LEN];

const NODES: TableDefinition<&KeyBytes, &[u8]> = TableDefinition::new("nodes");
const NAMES: TableDefinition<&str, &KeyBytes> = TableDefinition::new("names");
const IPS: TableDefinition<u32, &KeyBytes> = TableDefinition::new("ips");
const ALLOC_FLOOR: TableDefinition<&str, u32> = TableDefinition::new("alloc_floor");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// One enrolled node as the DC knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub public_key: PublicKey,
    pub name: String,
    pub virtual_ip: Ipv4Addr,
    /// Unix seconds of the first enrolment; a rename keeps it.
    pub enrolled_at: u64,
}

/// On-disk value of the `nodes` table; the key is the table key, so not repeated.
#[derive(Serialize, Deserialize)]
struct StoredRecord {
    name: String,
    virtual_ip: u32,
    enrolled_at: u64,
}

/// Why the store could not be opened, read or written; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create DC state directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create DC store file {}: {source}", path.display())]
    CreateFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open DC store {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error("DC store {}: {op} failed: {source}", path.display())]
    Db {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("DC store {} is corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "DC store {} has schema version {found}; this build only understands version {supported}",
        path.display()
    )]
    SchemaVersion {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
}

/// Why an enrolment was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("name {name:?} is already held by another node (key {}...)", holder.short())]
    NameTaken { name: String, holder: PublicKey },
    #[error("no free address left in {prefix}")]
    PrefixFull { prefix: Ipv4Net },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Handle to the DC's enrolment database. Cheap to share behind an `Arc`:
/// redb serialises writers, so concurrent `enroll` calls stay atomic.
pub struct Store {
    db: Database,
    /// The file path, or a placeholder for in-memory stores; only for messages.
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// What `enroll` decided inside the transaction.
enum Outcome {
    /// Nothing changed; the transaction is dropped without a commit.
    Unchanged(NodeRecord),
    /// Tables were written; commit before returning.
    Written(NodeRecord),
}

impl Store {
    /// Opens (creating if needed) `state_dir/dc.redb`. The directory is made 0700
    /// and the file 0600 when created, since it maps identities to addresses.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        create_private_dir(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(DB_FILE);
        create_private_file(&path).map_err(|source| StoreError::CreateFile {
            path: path.clone(),
            source,
        })?;
        // The integrity check turns a damaged file into an error rather than a panic.
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source: Box::new(source),
            })?;
        Store::init(db, path)
    }

    /// A store that lives only in memory, for tests of the DC logic.
    pub fn in_memory() -> Result<Store, StoreError> {
        let path = PathBuf::from("<in-memory>");
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source: Box::new(source),
            })?;
        Store::init(db, path)
    }

    /// Path of the database file (or `<in-memory>`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the tables and checks the schema version, so readers can assume
    /// every table exists.
    fn init(db: Database, path: PathBuf) -> Result<Store, StoreError> {
        let store = Store { db, path };
        let txn = store.begin_write()?;
        {
            let mut meta = txn
                .open_table(META)
                .map_err(store.db_err("open meta table"))?;
            let found = meta
                .get(SCHEMA_KEY)
                .map_err(store.db_err("read schema version"))?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION)
                        .map_err(store.db_err("write schema version"))?;
                }
                Some(SCHEMA_VERSION) => {}
                // Migrations from older versions go here once there are any.
                Some(found) => {
                    return Err(StoreError::SchemaVersion {
                        path: store.path.clone(),
                        found,
                        supported: SCHEMA_VERSION,
                    })
                }
            }
            txn.open_table(NODES)
                .map_err(store.db_err("open nodes table"))?;
            txn.open_table(NAMES)
                .map_err(store.db_err("open names table"))?;
            txn.open_table(IPS)
                .map_err(store.db_err("open ips table"))?;
            txn.open_table(ALLOC_FLOOR)
                .map_err(store.db_err("open alloc_floor table"))?;
        }
        txn.commit().map_err(store.db_err("commit schema"))?;
        Ok(store)
    }

    pub fn by_key(&self, key: &PublicKey) -> Result<Option<NodeRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(self.db_err("begin read"))?;
        let nodes = txn
            .open_table(NODES)
            .map_err(self.db_err("open nodes table"))?;
        self.load(&nodes, key)
    }

    pub fn by_name(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(self.db_err("begin read"))?;
        let names = txn
            .open_table(NAMES)
            .map_err(self.db_err("open names table"))?;
        let Some(key) = names
            .get(name)
            .map_err(self.db_err("read names table"))?
            .map(|v| PublicKey(*v.value()))
        else {
            return Ok(None);
        };
        let nodes = txn
            .open_table(NODES)
            .map_err(self.db_err("open nodes table"))?;
        self.load_indexed(&nodes, &key, &format!("name {name:?}"))
            .map(Some)
    }

    pub fn by_ip(&self, ip: Ipv4Addr) -> Result<Option<NodeRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(self.db_err("begin read"))?;
        let ips = txn.open_table(IPS).map_err(self.db_err("open ips table"))?;
        let Some(key) = ips
            .get(u32::from(ip))
            .map_err(self.db_err("read ips table"))?
            .map(|v| PublicKey(*v.value()))
        else {
            return Ok(None);
        };
        let nodes = txn
            .open_table(NODES)
            .map_err(self.db_err("open nodes table"))?;
        self.load_indexed(&nodes, &key, &format!("address {ip}"))
            .map(Some)
    }

    /// Every enrolled node, ordered by public key.
    pub fn all(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(self.db_err("begin read"))?;
        let nodes = txn
            .open_table(NODES)
            .map_err(self.db_err("open nodes table"))?;
        let mut out = Vec::new();
        for entry in nodes.iter().map_err(self.db_err("scan nodes table"))? {
            let (k, v) = entry.map_err(self.db_err("scan nodes table"))?;
            out.push(self.decode(PublicKey(*k.value()), v.value())?);
        }
        Ok(out)
    }

    /// Number of enrolled nodes.
    pub fn len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(self.db_err("begin read"))?;
        let nodes = txn
            .open_table(NODES)
            .map_err(self.db_err("open nodes table"))?;
        nodes.len().map_err(self.db_err("count nodes"))
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// One durable write transaction:
    /// - key known, same name: return the existing record unchanged.
    /// - key known, different name: rename if the new name is free (keep the address), else NameTaken.
    /// - key new: NameTaken if the name is held; else allocate the lowest free address in `prefix`
    ///   (never the network or broadcast address of the prefix), persist record + name index + ip index.
    ///
    /// A known key keeps its address even if `prefix` has since changed: addresses are stable.
    /// Names are compared byte for byte; the caller normalises case.
    pub fn enroll(
        &self,
        key: &PublicKey,
        name: &str,
        prefix: Ipv4Net,
        now_unix: u64,
    ) -> Result<NodeRecord, EnrollError> {
        let txn = self.begin_write()?;
        match self.enroll_in(&txn, key, name, prefix, now_unix)? {
            Outcome::Unchanged(record) => {
                txn.abort().map_err(self.db_err("abort enrolment"))?;
                Ok(record)
            }
            Outcome::Written(record) => {
                txn.commit().map_err(self.db_err("commit enrolment"))?;
                Ok(record)
            }
        }
    }

    fn enroll_in(
        &self,
        txn: &WriteTransaction,
        key: &PublicKey,
        name: &str,
        prefix: Ipv4Net,
        now_unix: u64,
    ) -> Result<Outcome, EnrollError> {
        let mut nodes = txn
            .open_table(NODES)
            .map_err(self.db_err("open nodes table"))?;
        let mut names = txn
            .open_table(NAMES)
            .map_err(self.db_err("open names table"))?;
        let mut ips = txn.open_table(IPS).map_err(self.db_err("open ips table"))?;

        let holder = names
            .get(name)
            .map_err(self.db_err("read names table"))?
            .map(|v| PublicKey(*v.value()));
        let existing = self.load(&nodes, key)?;

        if let Some(mut record) = existing {
            if record.name == name {
                return Ok(Outcome::Unchanged(record));
            }
            if let Some(holder) = holder {
                if holder == *key {
                    return Err(self
                        .corrupt(&format!(
                            "name {name:?} points at key {} whose record says {:?}",
                            key.short(),
                            record.name
                        ))
                        .into());
                }
                return Err(EnrollError::NameTaken {
                    name: name.to_string(),
                    holder,
                });
            }
            let old_holder = names
                .remove(record.name.as_str())
                .map_err(self.db_err("remove old name"))?
                .map(|v| PublicKey(*v.value()));
            // Returning an error drops the transaction uncommitted, undoing the remove.
            if old_holder != Some(*key) {
                return Err(self
                    .corrupt(&format!(
                        "record of key {} says name {:?} but the name index disagrees",
                        key.short(),
                        record.name
                    ))
                    .into());
            }
            names
                .insert(name, &key.0)
                .map_err(self.db_err("write names table"))?;
            record.name = name.to_string();
            nodes
                .insert(&key.0, self.encode(&record)?.as_slice())
                .map_err(self.db_err("write nodes table"))?;
            return Ok(Outcome::Written(record));
        }

        if let Some(holder) = holder {
            return Err(EnrollError::NameTaken {
                name: name.to_string(),
                holder,
            });
        }

        let mut floors = txn
            .open_table(ALLOC_FLOOR)
            .map_err(self.db_err("open alloc_floor table"))?;
        let ip = self.allocate(&ips, &mut floors, prefix)?;
        let record = NodeRecord {
            public_key: *key,
            name: name.to_string(),
            virtual_ip: ip,
            enrolled_at: now_unix,
        };
        nodes
            .insert(&key.0, self.encode(&record)?.as_slice())
            .map_err(self.db_err("write nodes table"))?;
        names
            .insert(name, &key.0)
            .map_err(self.db_err("write names table"))?;
        ips.insert(u32::from(ip), &key.0)
            .map_err(self.db_err("write ips table"))?;
        Ok(Outcome::Written(record))
    }

    /// Lowest unused host address of `prefix`. Starts at the prefix's floor (every
    /// host address below it is taken, since addresses are never released) and walks
    /// the ip index to the first gap, then raises the floor past the chosen address.
    fn allocate(
        &self,
        ips: &impl ReadableTable<u32, &'static KeyBytes>,
        floors: &mut redb::Table<&str, u32>,
        prefix: Ipv4Net,
    ) -> Result<Ipv4Addr, EnrollError> {
        let prefix = prefix.trunc();
        let full = EnrollError::PrefixFull { prefix };
        // /31 and /32 have no address that is neither network nor broadcast.
        if prefix.prefix_len() > 30 {
            return Err(full);
        }
        let first = u32::from(prefix.network()) + 1;
        let last = u32::from(prefix.broadcast()) - 1;
        let floor_key = prefix.to_string();
        let floor = floors
            .get(floor_key.as_str())
            .map_err(self.db_err("read alloc_floor table"))?
            .map_or(first, |v| v.value())
            .max(first);

        let mut candidate = u64::from(floor);
        for entry in ips
            .range(floor..=last)
            .map_err(self.db_err("scan ips table"))?
        {
            let (used, _) = entry.map_err(self.db_err("scan ips table"))?;
            let used = u64::from(used.value());
            if used > candidate {
                break;
            }
            candidate = used + 1;
        }
        if candidate > u64::from(last) {
            return Err(full);
        }
        // candidate <= last, so it fits in u32, and candidate + 1 <= broadcast.
        let chosen = u32::try_from(candidate).map_err(|_| self.corrupt("address overflow"))?;
        floors
            .insert(floor_key.as_str(), chosen + 1)
            .map_err(self.db_err("write alloc_floor table"))?;
        Ok(Ipv4Addr::from(chosen))
    }

    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(self.db_err("begin write"))?;
        // Already redb 4's default; stated so a committed enrolment survives SIGKILL
        // even if that default changes.
        txn.set_durability(Durability::Immediate)
            .map_err(self.db_err("set durability"))?;
        Ok(txn)
    }

    fn load(
        &self,
        nodes: &impl ReadableTable<&'static KeyBytes, &'static [u8]>,
        key: &PublicKey,
    ) -> Result<Option<NodeRecord>, StoreError> {
        match nodes.get(&key.0).map_err(self.db_err("read nodes table"))? {
            Some(v) => self.decode(*key, v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Loads a record an index pointed at; a dangling index entry is corruption.
    fn load_indexed(
        &self,
        nodes: &impl ReadableTable<&'static KeyBytes, &'static [u8]>,
        key: &PublicKey,
        via: &str,
    ) -> Result<NodeRecord, StoreError> {
        self.load(nodes, key)?.ok_or_else(|| {
            self.corrupt(&format!(
                "index entry for {via} points at key {} which has no record",
                key.short()
            ))
        })
    }

    fn encode(&self, record: &NodeRecord) -> Result<Vec<u8>, StoreError> {
        let stored = StoredRecord {
            name: record.name.clone(),
            virtual_ip: u32::from(record.virtual_ip),
            enrolled_at: record.enrolled_at,
        };
        postcard::to_allocvec(&stored).map_err(|e| {
            self.corrupt(&format!(
                "cannot encode record of {}: {e}",
                record.public_key.short()
            ))
        })
    }

    fn decode(&self, key: PublicKey, bytes: &[u8]) -> Result<NodeRecord, StoreError> {
        let stored: StoredRecord = postcard::from_bytes(bytes).map_err(|e| {
            self.corrupt(&format!("undecodable record for key {}: {e}", key.short()))
        })?;
        Ok(NodeRecord {
            public_key: key,
            name: stored.name,
            virtual_ip: Ipv4Addr::from(stored.virtual_ip),
            enrolled_at: stored.enrolled_at,
        })
    }

    fn corrupt(&self, detail: &str) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }

    /// Maps any redb error to one naming this store's file and the failed step.
    fn db_err<E: Into<redb::Error>>(&self, op: &'static str) -> impl FnOnce(E) -> StoreError + '_ {
        move |e| StoreError::Db {
            path: self.path.clone(),
            op,
            source: Box::new(e.into()),
        }
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates the file empty with mode 0600 if absent (redb would use the umask);
/// an existing file is left untouched.
fn create_private_file(path: &Path) -> io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(n: u8) -> PublicKey {
        PublicKey([n; KEY_LEN])
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    const DEFAULT: &str = "198.18.0.0/15";

    #[test]
    fn enrolment_is_stable_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let before: Vec<NodeRecord> = {
            let store = Store::open(&state).unwrap();
            (1..=5)
                .map(|i| {
                    store
                        .enroll(&key(i), &format!("n{i}"), net(DEFAULT), 100 + u64::from(i))
                        .unwrap()
                })
                .collect()
        };
        let store = Store::open(&state).unwrap();
        for r in &before {
            assert_eq!(store.by_key(&r.public_key).unwrap().as_ref(), Some(r));
            // Re-enrolling after the restart changes nothing.
            let again = store
                .enroll(&r.public_key, &r.name, net(DEFAULT), 9999)
                .unwrap();
            assert_eq!(&again, r);
        }
        // A new node after reopen gets the next address, not a reused one.
        let new = store.enroll(&key(6), "n6", net(DEFAULT), 1).unwrap();
        assert_eq!(new.virtual_ip, ip("198.18.0.6"));
        assert_eq!(store.all().unwrap().len(), 6);
    }

    #[test]
    fn drop_without_close_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.enroll(&key(1), "a", net(DEFAULT), 1).unwrap();
        let b = store.enroll(&key(2), "b", net(DEFAULT), 2).unwrap();
        store.enroll(&key(1), "a2", net(DEFAULT), 3).unwrap();
        // Leak the handle: no Drop and no close run, so the file is left as a
        // SIGKILL would leave it. The leaked handle still holds the file lock, so
        // open a copy of the file instead (redb repairs the unclean shutdown).
        std::mem::forget(store);
        let copy = tempfile::tempdir().unwrap();
        fs::copy(dir.path().join(DB_FILE), copy.path().join(DB_FILE)).unwrap();
        let store = Store::open(copy.path()).unwrap();
        assert_eq!(store.by_name("a").unwrap(), None);
        let a2 = store.by_name("a2").unwrap().unwrap();
        assert_eq!(
            (a2.public_key, a2.virtual_ip, a2.enrolled_at),
            (key(1), a.virtual_ip, 1)
        );
        assert_eq!(store.by_ip(b.virtual_ip).unwrap(), Some(b));
    }

    #[test]
    fn reopen_after_plain_drop_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let r = {
            let store = Store::open(dir.path()).unwrap();
            store.enroll(&key(7), "seven", net(DEFAULT), 7).unwrap()
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.by_name("seven").unwrap(), Some(r.clone()));
        assert_eq!(store.by_ip(r.virtual_ip).unwrap(), Some(r));
    }

    #[test]
    fn same_key_twice_returns_same_record() {
        let store = Store::in_memory().unwrap();
        let first = store.enroll(&key(1), "alice", net(DEFAULT), 10).unwrap();
        let second = store.enroll(&key(1), "alice", net(DEFAULT), 20).unwrap();
        assert_eq!(first, second);
        assert_eq!(second.enrolled_at, 10);
        assert_eq!(store.len().unwrap(), 1);
    }

    #[test]
    fn name_held_by_other_key_is_refused() {
        let store = Store::in_memory().unwrap();
        store.enroll(&key(1), "alice", net(DEFAULT), 1).unwrap();
        let err = store.enroll(&key(2), "alice", net(DEFAULT), 2).unwrap_err();
        match &err {
            EnrollError::NameTaken { name, holder } => {
                assert_eq!(name, "alice");
                assert_eq!(*holder, key(1));
            }
            other => panic!("expected NameTaken, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("\"alice\""), "{msg}");
        assert!(msg.contains(&key(1).short()), "{msg}");
        // Nothing was written for the refused key.
        assert_eq!(store.by_key(&key(2)).unwrap(), None);
        assert_eq!(store.len().unwrap(), 1);
    }

    #[test]
    fn rename_keeps_address_and_frees_old_name() {
        let store = Store::in_memory().unwrap();
        let a = store.enroll(&key(1), "alice", net(DEFAULT), 1).unwrap();
        store.enroll(&key(2), "bob", net(DEFAULT), 2).unwrap();
        let renamed = store.enroll(&key(1), "carol", net(DEFAULT), 3).unwrap();
        assert_eq!(renamed.virtual_ip, a.virtual_ip);
        assert_eq!(renamed.enrolled_at, 1);
        assert_eq!(renamed.name, "carol");
        assert_eq!(store.by_name("alice").unwrap(), None);
        assert_eq!(store.by_name("carol").unwrap(), Some(renamed.clone()));
        assert_eq!(store.by_ip(a.virtual_ip).unwrap(), Some(renamed));
        // Renaming onto a held name is refused and changes nothing.
        let err = store.enroll(&key(1), "bob", net(DEFAULT), 4).unwrap_err();
        assert!(
            matches!(err, EnrollError::NameTaken { ref name, holder } if name == "bob" && holder == key(2))
        );
        assert_eq!(store.by_key(&key(1)).unwrap().unwrap().name, "carol");
        // The freed name can be taken by a new node.
        let d = store.enroll(&key(3), "alice", net(DEFAULT), 5).unwrap();
        assert_ne!(d.virtual_ip, a.virtual_ip);
    }

    #[test]
    fn allocation_is_lowest_free_and_skips_network_address() {
        let store = Store::in_memory().unwrap();
        let ips: Vec<Ipv4Addr> = (1..=3)
            .map(|i| {
                store
                    .enroll(&key(i), &format!("n{i}"), net(DEFAULT), 0)
                    .unwrap()
                    .virtual_ip
            })
            .collect();
        assert_eq!(
            ips,
            vec![ip("198.18.0.1"), ip("198.18.0.2"), ip("198.18.0.3")]
        );
        // Host bits in the configured prefix are ignored.
        let r = store
            .enroll(&key(4), "n4", net("198.18.5.5/15"), 0)
            .unwrap();
        assert_eq!(r.virtual_ip, ip("198.18.0.4"));
    }

    #[test]
    fn allocation_fills_gaps_left_by_other_prefixes() {
        // Enrolments under a narrower prefix occupy addresses inside the wider
        // one; the wider prefix's scan must step over them, not reuse them.
        let store = Store::in_memory().unwrap();
        let a = store.enroll(&key(1), "a", net("198.18.0.0/30"), 0).unwrap();
        assert_eq!(a.virtual_ip, ip("198.18.0.1"));
        let b = store.enroll(&key(2), "b", net("198.18.0.0/24"), 0).unwrap();
        assert_eq!(b.virtual_ip, ip("198.18.0.2"));
        let c = store
            .enroll(&key(3), "c", net("198.18.0.0/30"), 0)
            .unwrap_err();
        assert!(matches!(c, EnrollError::PrefixFull { .. }));
        let d = store.enroll(&key(4), "d", net("198.18.0.0/24"), 0).unwrap();
        assert_eq!(d.virtual_ip, ip("198.18.0.3"));
        let e = store.enroll(&key(5), "e", net("198.18.0.0/25"), 0).unwrap();
        assert_eq!(e.virtual_ip, ip("198.18.0.4"));
        let f = store.enroll(&key(6), "f", net("198.18.0.0/24"), 0).unwrap();
        assert_eq!(f.virtual_ip, ip("198.18.0.5"));
    }

    #[test]
    fn slash_30_fills_after_two_nodes() {
        let store = Store::in_memory().unwrap();
        let p = net("10.9.8.4/30");
        let a = store.enroll(&key(1), "a", p, 0).unwrap();
        let b = store.enroll(&key(2), "b", p, 0).unwrap();
        assert_eq!(a.virtual_ip, ip("10.9.8.5"));
        assert_eq!(b.virtual_ip, ip("10.9.8.6"));
        let err = store.enroll(&key(3), "c", p, 0).unwrap_err();
        match &err {
            EnrollError::PrefixFull { prefix } => assert_eq!(*prefix, p),
            other => panic!("expected PrefixFull, got {other:?}"),
        }
        assert!(err.to_string().contains("10.9.8.4/30"));
        assert_eq!(store.by_key(&key(3)).unwrap(), None);
        assert_eq!(store.by_name("c").unwrap(), None);
        // Known keys still re-enrol fine in a full prefix.
        assert_eq!(store.enroll(&key(1), "a", p, 5).unwrap(), a);
    }

    #[test]
    fn tiny_prefixes_have_no_host_addresses() {
        let store = Store::in_memory().unwrap();
        for p in ["10.0.0.0/31", "10.0.0.1/32"] {
            let err = store.enroll(&key(1), "a", net(p), 0).unwrap_err();
            assert!(matches!(err, EnrollError::PrefixFull { .. }), "{p}");
        }
    }

    #[test]
    fn top_of_address_space_does_not_overflow() {
        let store = Store::in_memory().unwrap();
        let p = net("255.255.255.252/30");
        assert_eq!(
            store.enroll(&key(1), "a", p, 0).unwrap().virtual_ip,
            ip("255.255.255.253")
        );
        assert_eq!(
            store.enroll(&key(2), "b", p, 0).unwrap().virtual_ip,
            ip("255.255.255.254")
        );
        assert!(matches!(
            store.enroll(&key(3), "c", p, 0),
            Err(EnrollError::PrefixFull { .. })
        ));
    }

    #[test]
    fn allocation_floor_never_skips_a_free_address() {
        // Fill a /28 (14 hosts), then confirm every host was handed out once.
        let store = Store::in_memory().unwrap();
        let p = net("192.0.2.0/28");
        let mut got: Vec<u32> = (1..=14)
            .map(|i| {
                u32::from(
                    store
                        .enroll(&key(i), &format!("h{i}"), p, 0)
                        .unwrap()
                        .virtual_ip,
                )
            })
            .collect();
        got.sort_unstable();
        let want: Vec<u32> = (1..=14).map(|h| u32::from(ip("192.0.2.0")) + h).collect();
        assert_eq!(got, want);
        assert!(matches!(
            store.enroll(&key(15), "h15", p, 0),
            Err(EnrollError::PrefixFull { .. })
        ));
    }

    #[test]
    fn open_creates_private_dir_and_names_path_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b");
        let store = Store::open(&state).unwrap();
        assert_eq!(store.path(), state.join(DB_FILE));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
            let mode = fs::metadata(state.join(DB_FILE))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600);
        }
        // A second open of the same file in this process is refused, naming the file.
        let err = Store::open(&state).unwrap_err();
        assert!(
            err.to_string()
                .contains(&state.join(DB_FILE).display().to_string()),
            "{err}"
        );

        // A state "directory" that is a file fails with its path in the message.
        let file = dir.path().join("plain");
        fs::write(&file, b"x").unwrap();
        let err = Store::open(&file).unwrap_err();
        assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn garbage_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(DB_FILE), vec![0x5a; 8192]).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains(DB_FILE), "{err}");
    }

    #[test]
    fn newer_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join(DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(SCHEMA_KEY, SCHEMA_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaVersion { found, .. } if found == SCHEMA_VERSION + 1),
            "{err:?}"
        );
    }

    #[test]
    fn store_and_errors_are_thread_safe() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Store>();
        assert_send_sync::<StoreError>();
        assert_send_sync::<EnrollError>();
    }

    #[test]
    fn concurrent_enrolments_get_distinct_addresses() {
        let store = std::sync::Arc::new(Store::in_memory().unwrap());
        let handles: Vec<_> = (0..4u8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..25u8)
                        .map(|i| {
                            let n = t * 25 + i;
                            store
                                .enroll(&key(n), &format!("n{n}"), net(DEFAULT), 0)
                                .unwrap()
                                .virtual_ip
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Ipv4Addr> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 100);
        assert_eq!(all[0], ip("198.18.0.1"));
        assert_eq!(all[99], ip("198.18.0.100"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn random_enrolments_keep_indexes_consistent(
            keys in proptest::collection::hash_set(any::<[u8; KEY_LEN]>(), 1..40),
            plen in 24u8..=28,
            base in any::<u32>(),
            renames in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let prefix = Ipv4Net::new(Ipv4Addr::from(base), plen).unwrap().trunc();
            let capacity = (1usize << (32 - plen)) - 2;
            let store = Store::in_memory().unwrap();
            let keys: Vec<PublicKey> = keys.into_iter().map(PublicKey).collect();
            for (i, k) in keys.iter().enumerate() {
                let res = store.enroll(k, &format!("node-{i}"), prefix, i as u64);
                if i < capacity {
                    let r = res.unwrap();
                    prop_assert!(prefix.contains(&r.virtual_ip));
                    prop_assert_ne!(r.virtual_ip, prefix.network());
                    prop_assert_ne!(r.virtual_ip, prefix.broadcast());
                } else {
                    let full = matches!(res, Err(EnrollError::PrefixFull { .. }));
                    prop_assert!(full);
                }
            }
            for (j, idx) in renames.iter().enumerate() {
                let k = idx.get(&keys);
                if let Some(before) = store.by_key(k).unwrap() {
                    let r = store.enroll(k, &format!("renamed-{j}"), prefix, 0).unwrap();
                    prop_assert_eq!(r.virtual_ip, before.virtual_ip);
                }
            }
            let all = store.all().unwrap();
            prop_assert_eq!(all.len(), keys.len().min(capacity));
            let mut seen = std::collections::HashSet::new();
            for r in &all {
                prop_assert!(seen.insert(r.virtual_ip), "duplicate {}", r.virtual_ip);
                let by_ip = store.by_ip(r.virtual_ip).unwrap();
                let by_key = store.by_key(&r.public_key).unwrap();
                let by_name = store.by_name(&r.name).unwrap();
                prop_assert_eq!(by_ip.as_ref(), Some(r));
                prop_assert_eq!(by_key.as_ref(), Some(r));
                prop_assert_eq!(by_name.as_ref(), Some(r));
            }
            // Dense allocation: exactly the lowest len() host addresses are used.
            let mut used: Vec<u32> = all.iter().map(|r| u32::from(r.virtual_ip)).collect();
            used.sort_unstable();
            let first = u32::from(prefix.network()) + 1;
            let want: Vec<u32> = (0..used.len() as u32).map(|o| first + o).collect();
            prop_assert_eq!(used, want);
        }
    }
}
