//! Unit tests of the model's rules, with a simulated disk that applies sync
//! plans and torn writes the way the file system layer does.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::time::SystemTime;

use super::*;

fn meta() -> Meta {
    Meta::new(0o644, 0, 0, SystemTime::UNIX_EPOCH)
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

fn n(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The model plus the durable bytes the backing files would hold.
struct Fs {
    m: Model,
    disk: HashMap<Ino, Vec<u8>>,
}

impl Fs {
    fn new() -> Self {
        Fs {
            m: Model::new(Meta::new(0o755, 0, 0, now())),
            disk: HashMap::new(),
        }
    }

    fn mkdir(&mut self, parent: Ino, name: &str) -> Ino {
        self.m.create(parent, n(name), Kind::Dir, meta()).unwrap()
    }

    fn create(&mut self, parent: Ino, name: &str) -> Ino {
        self.m.create(parent, n(name), Kind::File, meta()).unwrap()
    }

    fn write(&mut self, ino: Ino, off: u64, data: &[u8]) {
        let fh = self.m.open(ino).unwrap();
        self.m.write(fh, off, data, now()).unwrap();
        self.m.release(fh);
    }

    fn fsync(&mut self, ino: Ino) {
        let fh = self.m.open(ino).unwrap();
        self.fsync_fh(fh).unwrap();
        self.m.release(fh);
    }

    fn fsync_fh(&mut self, fh: Fh) -> FsResult<()> {
        let plan = self.m.sync_plan(fh)?;
        let ino = plan.ino;
        let d = self.disk.entry(ino).or_default();
        if let Some(t) = plan.truncate_to {
            d.truncate(t as usize);
        }
        for (off, bytes) in &plan.writes {
            let end = *off as usize + bytes.len();
            if d.len() < end {
                d.resize(end, 0);
            }
            d[*off as usize..end].copy_from_slice(bytes);
        }
        d.resize(plan.size as usize, 0);
        self.m.commit_sync(ino)
    }

    fn fsyncdir(&mut self, dir: Ino) {
        let fh = self.m.open(dir).unwrap();
        self.m.fsyncdir(fh).unwrap();
        self.m.release(fh);
    }

    fn power_loss(&mut self, tear: Option<u64>) -> PowerLossReport {
        let r = self.m.power_loss(tear);
        if let Some(t) = &r.torn {
            let d = self.disk.entry(t.ino).or_default();
            let end = t.offset as usize + t.data.len();
            if d.len() < end {
                d.resize(end, 0);
            }
            d[t.offset as usize..end].copy_from_slice(&t.data);
        }
        for i in self.m.take_dropped() {
            self.disk.remove(&i);
        }
        r
    }

    fn read(&mut self, ino: Ino) -> Vec<u8> {
        let fh = self.m.open(ino).unwrap();
        let out = self.read_fh(fh, 0, u64::MAX).unwrap();
        self.m.release(fh);
        out
    }

    fn read_fh(&self, fh: Fh, off: u64, len: u64) -> FsResult<Vec<u8>> {
        let ino = self.m.handle(fh)?;
        let mut out = Vec::new();
        for s in self.m.read(fh, off, len)? {
            match s {
                Segment::Data(d) => out.extend_from_slice(d),
                Segment::Zeros(z) => out.extend(std::iter::repeat_n(0u8, z as usize)),
                Segment::Durable { offset, len } => {
                    let d = self.disk.get(&ino).expect("durable bytes exist");
                    assert!(
                        (offset + len) as usize <= d.len(),
                        "read past the durable content"
                    );
                    out.extend_from_slice(&d[offset as usize..(offset + len) as usize]);
                }
            }
        }
        Ok(out)
    }

    /// A durable file `name` in `parent` holding `data`.
    fn durable_file(&mut self, parent: Ino, name: &str, data: &[u8]) -> Ino {
        let f = self.create(parent, name);
        self.write(f, 0, data);
        self.fsync(f);
        self.fsyncdir(parent);
        f
    }

    fn size(&self, ino: Ino) -> u64 {
        self.m.attr(ino).unwrap().size
    }
}

#[test]
fn unsynced_write_is_lost() {
    let mut fs = Fs::new();
    let f = fs.create(ROOT, "f");
    fs.fsyncdir(ROOT);
    fs.write(f, 0, b"hello");
    assert_eq!(fs.read(f), b"hello", "reads see the volatile view");
    let r = fs.power_loss(None);
    assert_eq!(r.bytes_dropped, 5);
    assert_eq!(fs.m.lookup(ROOT, n("f")), Ok(f));
    assert_eq!(fs.size(f), 0);
    assert_eq!(fs.read(f), b"");
}

#[test]
fn synced_write_is_kept_and_later_writes_are_not() {
    let mut fs = Fs::new();
    let f = fs.durable_file(ROOT, "f", b"hello");
    fs.write(f, 5, b" world");
    fs.write(f, 0, b"J");
    assert_eq!(fs.read(f), b"Jello world");
    fs.power_loss(None);
    assert_eq!(fs.read(f), b"hello");
}

#[test]
fn overwrites_mix_with_durable_bytes_on_read() {
    let mut fs = Fs::new();
    let f = fs.durable_file(ROOT, "f", b"0123456789");
    fs.write(f, 3, b"ab");
    fs.write(f, 8, b"XYZ");
    assert_eq!(fs.read(f), b"012ab567XYZ");
    let fh = fs.m.open(f).unwrap();
    assert_eq!(fs.read_fh(fh, 4, 5).unwrap(), b"b567X");
    assert_eq!(fs.read_fh(fh, 11, 5).unwrap(), b"");
    fs.fsync_fh(fh).unwrap();
    fs.m.release(fh);
    fs.power_loss(None);
    assert_eq!(fs.read(f), b"012ab567XYZ");
}

#[test]
fn size_changes_are_volatile_until_fsync() {
    let mut fs = Fs::new();
    let f = fs.durable_file(ROOT, "f", b"hello world");
    fs.m.set_size(f, 5, now()).unwrap();
    assert_eq!(fs.read(f), b"hello");
    // Extending after a truncate shows zeros, not the old bytes.
    fs.m.set_size(f, 8, now()).unwrap();
    assert_eq!(fs.read(f), b"hello\0\0\0");
    fs.power_loss(None);
    assert_eq!(fs.size(f), 11);
    assert_eq!(fs.read(f), b"hello world");

    fs.m.set_size(f, 5, now()).unwrap();
    fs.fsync(f);
    fs.m.set_size(f, 20, now()).unwrap();
    fs.power_loss(None);
    assert_eq!(fs.read(f), b"hello");
}

#[test]
fn truncate_then_rewrite_then_fsync_keeps_only_the_new_bytes() {
    let mut fs = Fs::new();
    let f = fs.durable_file(ROOT, "f", b"abcdefgh");
    fs.m.set_size(f, 2, now()).unwrap();
    fs.write(f, 4, b"XY");
    assert_eq!(fs.read(f), b"ab\0\0XY");
    fs.fsync(f);
    fs.power_loss(None);
    assert_eq!(fs.read(f), b"ab\0\0XY");
}

#[test]
fn fallocate_extends_the_size_volatilely() {
    let mut fs = Fs::new();
    let f = fs.durable_file(ROOT, "f", b"ab");
    let fh = fs.m.open(f).unwrap();
    fs.m.allocate(fh, 0, 100, true, now()).unwrap();
    assert_eq!(fs.size(f), 2, "KEEP_SIZE changes nothing visible");
    fs.m.allocate(fh, 0, 100, false, now()).unwrap();
    assert_eq!(fs.size(f), 100);
    fs.m.release(fh);
    fs.power_loss(None);
    assert_eq!(fs.size(f), 2);
}

#[test]
fn new_file_fsynced_without_its_directory_disappears() {
    let mut fs = Fs::new();
    let f = fs.create(ROOT, "new");
    fs.write(f, 0, b"data");
    fs.fsync(f);
    let r = fs.power_loss(None);
    assert_eq!(fs.m.lookup(ROOT, n("new")), Err(FsError::NotFound));
    assert_eq!(fs.m.attr(f), Err(FsError::NotFound));
    assert_eq!(r.inodes_dropped, 1);
    assert!(
        !fs.disk.contains_key(&f),
        "its durable bytes were dropped too"
    );
}

#[test]
fn new_file_survives_when_file_and_directory_are_synced() {
    let mut fs = Fs::new();
    let f = fs.create(ROOT, "new");
    fs.write(f, 0, b"data");
    fs.fsync(f);
    fs.fsyncdir(ROOT);
    fs.power_loss(None);
    assert_eq!(fs.m.lookup(ROOT, n("new")), Ok(f));
    assert_eq!(fs.read(f), b"data");
}

#[test]
fn directory_synced_but_not_the_file_keeps_an_empty_file() {
    let mut fs = Fs::new();
    let f = fs.create(ROOT, "new");
    fs.write(f, 0, b"data");
    fs.fsyncdir(ROOT);
    fs.power_loss(None);
    assert_eq!(fs.m.lookup(ROOT, n("new")), Ok(f));
    assert_eq!(fs.read(f), b"");
}

#[test]
fn file_in_a_new_directory_needs_every_directory_on_the_path_synced() {
    let mut fs = Fs::new();
    let d = fs.mkdir(ROOT, "d");
    let f = fs.create(d, "f");
    fs.write(f, 0, b"x");
    fs.fsync(f);
    fs.fsyncdir(d);
    fs.power_loss(None);
    assert_eq!(fs.m.lookup(ROOT, n("d")), Err(FsError::NotFound));

    let d = fs.mkdir(ROOT, "d");
    let f = fs.create(d, "f");
    fs.write(f, 0, b"x");
    fs.fsync(f);
    fs.fsyncdir(d);
    fs.fsyncdir(ROOT);
    fs.power_loss(None);
    assert_eq!(fs.m.lookup(ROOT, n("d")), Ok(d));
    assert_eq!(fs.m.lookup(d, n("f")), Ok(f));
    assert_eq!(fs.read(f), b"x");
}

#[test]
fn unlink_is_undone_unless_the_directory_is_synced() {
    let mut fs = Fs::new();
    let f = fs.durable_file(ROOT, "f", b"keep");
    fs.write(f, 0, b"lost");
    fs.m.unlink(ROOT, n("f"), now()).unwrap();
    assert_eq!(fs.m.lookup(ROOT, n("f")), Err(FsError::NotFound));
    fs.power_loss(None);
    assert_eq!(fs.m.lookup(ROOT, n("f")), Ok(f));
    assert_eq!(fs.read(f), b"keep", "back with its durable content");

    fs.m.unlink(ROOT, n("f"), now()).unwrap();
    fs.fsyncdir(ROOT);
    fs.power_loss(None);
    assert_eq!(fs.m.lookup(ROOT, n("f")), Err(FsError::NotFound));
    assert_eq!(fs.m.attr(f), Err(FsError::NotFound));
}

#[test]
fn rmdir_is_undone_unless_the_parent_is_synced() {
    let mut fs = Fs::new();
    let d = fs.mkdir(ROOT, "d");
    fs.fsyncdir(ROOT);
    fs.m.rmdir(ROOT, n("d"), now()).unwrap();
    fs.power_loss(None);
    assert_eq!(fs.m.lookup(ROOT, n("d")), Ok(d));
    fs.m.rmdir(ROOT, n("d"), now()).unwrap();
    fs.fsyncdir(ROOT);
    fs.power_loss(None);
    assert_eq!(fs.m.lookup(ROOT, n("d")), Err(FsError::NotFound));
}

#[test]
fn unlinked_but_open_file_stays_readable_until_released() {
    let mut fs = Fs::new();
    let f = fs.durable_file(ROOT, "f", b"abc");
    let fh = fs.m.open(f).unwrap();
    fs.m.unlink(ROOT, n("f"), now()).unwrap();
    fs.fsyncdir(ROOT);
    assert_eq!(fs.read_fh(fh, 0, 10).unwrap(), b"abc");
    assert!(fs.m.take_dropped().is_empty());
    fs.m.release(fh);
    assert_eq!(fs.m.take_dropped(), vec![f]);
}

#[test]
fn rename_is_undone_at_power_loss() {
    let mut fs = Fs::new();
    let f = fs.durable_file(ROOT, "a", b"A");
    fs.m.rename(ROOT, n("a"), ROOT, n("b"), false, now())
        .unwrap();
    assert_eq!(fs.m.lookup(ROOT, n("b")), Ok(f));
    fs.power_loss(None);
    assert_eq!(fs.m.lookup(ROOT, n("a")), Ok(f));
    assert_eq!(fs.m.lookup(ROOT, n("b")), Err(FsError::NotFound));
}

#[test]
fn rename_over_an_existing_file_is_undone_or_made_durable_whole() {
    let mut fs = Fs::new();
    let a = fs.durable_file(ROOT, "a", b"new");
    let b = fs.durable_file(ROOT, "b", b"old");
    fs.m.rename(ROOT, n("a"), ROOT, n("b"), false, now())
        .unwrap();
    fs.power_loss(None);
    assert_eq!(fs.read(a), b"new");
    assert_eq!(fs.m.lookup(ROOT, n("b")), Ok(b));
    assert_eq!(fs.read(b), b"old");

    fs.m.rename(ROOT, n("a"), ROOT, n("b"), false, now())
        .unwrap();
    fs.fsyncdir(ROOT);
    fs.power_loss(None);
    assert_eq!(fs.m.lookup(ROOT, n("a")), Err(FsError::NotFound));
    assert_eq!(fs.m.lookup(ROOT, n("b")), Ok(a));
    assert_eq!(fs.read(a), b"new");
    assert_eq!(fs.m.attr(b), Err(FsError::NotFound));
}

#[test]
fn atomic_replace_pattern_survives() {
    // write tmp, fsync tmp, rename over the target, fsync the directory.
    let mut fs = Fs::new();
    fs.durable_file(ROOT, "conf", b"v1");
    let t = fs.create(ROOT, "conf.tmp");
    fs.write(t, 0, b"v2");
    fs.fsync(t);
    fs.m.rename(ROOT, n("conf.tmp"), ROOT, n("conf"), false, now())
        .unwrap();
    fs.fsyncdir(ROOT);
    fs.power_loss(None);
    let c = fs.m.lookup(ROOT, n("conf")).unwrap();
    assert_eq!(fs.read(c), b"v2");
    assert_eq!(fs.m.lookup(ROOT, n("conf.tmp")), Err(FsError::NotFound));
}

#[test]
fn cross_directory_rename_is_made_durable_by_either_directory() {
    for sync_source in [true, false] {
        let mut fs = Fs::new();
        let x = fs.mkdir(ROOT, "x");
        let y = fs.mkdir(ROOT, "y");
        fs.fsyncdir(ROOT);
        let f = fs.durable_file(x, "f", b"F");
        // Unrelated volatile changes in both directories.
        fs.create(x, "other-x");
        fs.create(y, "other-y");
        fs.m.rename(x, n("f"), y, n("g"), false, now()).unwrap();
        fs.fsyncdir(if sync_source { x } else { y });
        fs.power_loss(None);
        assert_eq!(
            fs.m.lookup(x, n("f")),
            Err(FsError::NotFound),
            "{sync_source}"
        );
        assert_eq!(fs.m.lookup(y, n("g")), Ok(f), "{sync_source}");
        assert_eq!(fs.read(f), b"F");
        // Only the synced directory's own other changes became durable.
        assert_eq!(fs.m.lookup(x, n("other-x")).is_ok(), sync_source);
        assert_eq!(fs.m.lookup(y, n("other-y")).is_ok(), !sync_source);
    }
}

#[test]
fn rename_chain_never_leaves_the_file_in_two_places() {
    let mut fs = Fs::new();
    let x = fs.mkdir(ROOT, "x");
    let y = fs.mkdir(ROOT, "y");
    let z = fs.mkdir(ROOT, "z");
    fs.fsyncdir(ROOT);
    let f = fs.durable_file(x, "a", b"F");
    fs.m.rename(x, n("a"), y, n("b"), false, now()).unwrap();
    fs.m.rename(y, n("b"), z, n("c"), false, now()).unwrap();
    fs.fsyncdir(z);
    fs.power_loss(None);
    assert_eq!(fs.m.lookup(z, n("c")), Ok(f));
    assert_eq!(fs.m.lookup(x, n("a")), Err(FsError::NotFound));
    assert_eq!(fs.m.lookup(y, n("b")), Err(FsError::NotFound));
}

#[test]
fn directory_renames_are_made_durable_together() {
    // a holds b; b moves to the root, then a moves into b. Syncing only b
    // must not leave a cycle a <-> b detached from the root.
    let mut fs = Fs::new();
    let a = fs.mkdir(ROOT, "a");
    let b = fs.mkdir(a, "b");
    fs.fsyncdir(a);
    fs.fsyncdir(ROOT);
    let f = fs.durable_file(b, "f", b"F");
    fs.m.rename(a, n("b"), ROOT, n("b"), false, now()).unwrap();
    fs.m.rename(ROOT, n("a"), b, n("a"), false, now()).unwrap();
    fs.fsyncdir(b);
    fs.power_loss(None);
    assert_eq!(fs.m.lookup(ROOT, n("b")), Ok(b));
    assert_eq!(fs.m.lookup(b, n("a")), Ok(a));
    assert_eq!(fs.m.lookup(b, n("f")), Ok(f));
    assert_eq!(fs.m.lookup(ROOT, n("a")), Err(FsError::NotFound));
    assert_eq!(fs.m.durable_positions().len(), 3);
}

#[test]
fn renamed_directory_carries_its_durable_subtree() {
    let mut fs = Fs::new();
    let d = fs.mkdir(ROOT, "d");
    fs.fsyncdir(ROOT);
    let f = fs.durable_file(d, "f", b"F");
    fs.m.rename(ROOT, n("d"), ROOT, n("e"), false, now())
        .unwrap();
    fs.fsyncdir(ROOT);
    fs.power_loss(None);
    assert_eq!(fs.m.lookup(ROOT, n("e")), Ok(d));
    assert_eq!(fs.m.lookup(d, n("f")), Ok(f));
    assert_eq!(fs.m.parent(d), Ok(ROOT));
}

#[test]
fn tear_keeps_only_a_prefix_of_the_last_write() {
    let mut kept_lengths = std::collections::BTreeSet::new();
    for seed in 0..64u64 {
        let mut fs = Fs::new();
        let other = fs.durable_file(ROOT, "other", b"o");
        let f = fs.durable_file(ROOT, "f", b"aaaa");
        fs.write(other, 1, b"earlier write, dropped");
        fs.write(f, 4, b"bbbbbbbb");
        let r = fs.power_loss(Some(seed));
        let t = r.torn.expect("a candidate existed");
        assert_eq!((t.ino, t.offset, t.write_len), (f, 4, 8));
        assert!(t.kept <= 8);
        kept_lengths.insert(t.kept);
        let mut want = b"aaaa".to_vec();
        want.extend(std::iter::repeat_n(b'b', t.kept as usize));
        assert_eq!(fs.read(f), want, "seed {seed}");
        assert_eq!(fs.read(other), b"o", "only the last write tears");
        // The same seed picks the same prefix every time.
        let mut again = Fs::new();
        again.durable_file(ROOT, "f", b"aaaa");
        let g = again.m.lookup(ROOT, n("f")).unwrap();
        again.write(g, 4, b"bbbbbbbb");
        assert_eq!(
            again.power_loss(Some(seed)).torn.map(|t| t.kept),
            Some(t.kept)
        );
    }
    assert!(kept_lengths.contains(&0), "an empty prefix is possible");
    assert!(kept_lengths.len() > 4, "seeds pick different prefixes");
}

#[test]
fn tear_of_an_overwrite_changes_only_the_prefix_bytes() {
    let mut fs = Fs::new();
    let f = fs.durable_file(ROOT, "f", b"0123456789");
    fs.write(f, 2, b"abcdef");
    let seed = (0..100u64)
        .find(|s| splitmix64(*s) % 7 == 3)
        .expect("some seed keeps 3 bytes");
    let r = fs.power_loss(Some(seed));
    assert_eq!(r.torn.map(|t| t.kept), Some(3));
    assert_eq!(fs.read(f), b"01abc56789");
}

#[test]
fn tear_skips_files_whose_entry_is_not_durable() {
    let mut fs = Fs::new();
    let f = fs.durable_file(ROOT, "f", b"");
    fs.write(f, 0, b"durable-entry write");
    let g = fs.create(ROOT, "g");
    fs.write(g, 0, b"newer write to a file that vanishes");
    let r = fs.power_loss(Some(7));
    assert_eq!(r.torn.map(|t| t.ino), Some(f));
    assert_eq!(fs.m.lookup(ROOT, n("g")), Err(FsError::NotFound));
}

#[test]
fn tear_without_unsynced_writes_does_nothing() {
    let mut fs = Fs::new();
    let f = fs.durable_file(ROOT, "f", b"x");
    let r = fs.power_loss(Some(1));
    assert_eq!(r.torn, None);
    assert_eq!(fs.read(f), b"x");
}

#[test]
fn handles_from_before_a_power_loss_answer_eio() {
    let mut fs = Fs::new();
    let f = fs.durable_file(ROOT, "f", b"x");
    let fh = fs.m.open(f).unwrap();
    let dh = fs.m.open(ROOT).unwrap();
    let r = fs.power_loss(None);
    assert_eq!(r.handles_invalidated, 2);
    assert_eq!(fs.read_fh(fh, 0, 1), Err(FsError::Stale));
    assert_eq!(fs.m.write(fh, 0, b"y", now()), Err(FsError::Stale));
    assert_eq!(fs.fsync_fh(fh), Err(FsError::Stale));
    assert_eq!(fs.m.fsyncdir(dh), Err(FsError::Stale));
    assert_eq!(FsError::Stale.errno(), libc::EIO);
    fs.m.release(fh);
    assert_eq!(fs.m.handle(fh), Err(FsError::BadHandle));
    // New handles work.
    assert_eq!(fs.read(f), b"x");
}

#[test]
fn namespace_errors() {
    let mut fs = Fs::new();
    let d = fs.mkdir(ROOT, "d");
    let sub = fs.mkdir(d, "sub");
    fs.create(ROOT, "f");
    let e = |r: FsResult<Ino>| r.map(|_| ());
    assert_eq!(
        e(fs.m.create(ROOT, n("f"), Kind::File, meta())),
        Err(FsError::Exists)
    );
    assert_eq!(fs.m.unlink(ROOT, n("d"), now()), Err(FsError::IsDir));
    assert_eq!(fs.m.rmdir(ROOT, n("f"), now()), Err(FsError::NotDir));
    assert_eq!(fs.m.rmdir(ROOT, n("d"), now()), Err(FsError::NotEmpty));
    assert_eq!(
        fs.m.rename(ROOT, n("d"), sub, n("x"), false, now()),
        Err(FsError::Invalid),
        "a directory cannot move into itself"
    );
    assert_eq!(
        fs.m.rename(ROOT, n("f"), ROOT, n("d"), false, now()),
        Err(FsError::IsDir)
    );
    assert_eq!(
        fs.m.rename(ROOT, n("d"), ROOT, n("f"), false, now()),
        Err(FsError::NotDir)
    );
    fs.create(ROOT, "g");
    assert_eq!(
        fs.m.rename(ROOT, n("f"), ROOT, n("g"), true, now()),
        Err(FsError::Exists)
    );
    assert_eq!(fs.m.lookup(ROOT, n("missing")), Err(FsError::NotFound));
    assert_eq!(
        e(fs.m.create(ROOT, n("a/b"), Kind::File, meta())),
        Err(FsError::Invalid)
    );
    let long = "x".repeat(256);
    assert_eq!(
        e(fs.m.create(ROOT, n(&long), Kind::File, meta())),
        Err(FsError::NameTooLong)
    );
    let f = fs.m.lookup(ROOT, n("f")).unwrap();
    let fh = fs.m.open(f).unwrap();
    assert_eq!(fs.m.write(fh, MAX_SIZE, b"x", now()), Err(FsError::TooBig));
    assert_eq!(fs.m.set_size(f, MAX_SIZE + 1, now()), Err(FsError::TooBig));
    assert_eq!(fs.m.read(fh, u64::MAX, u64::MAX), Ok(Vec::new()));
    assert_eq!(fs.m.handle(9999), Err(FsError::BadHandle));
}

#[test]
fn rename_onto_an_empty_directory_replaces_it() {
    let mut fs = Fs::new();
    let a = fs.mkdir(ROOT, "a");
    let b = fs.mkdir(ROOT, "b");
    fs.m.rename(ROOT, n("a"), ROOT, n("b"), false, now())
        .unwrap();
    assert_eq!(fs.m.lookup(ROOT, n("b")), Ok(a));
    assert_eq!(fs.m.attr(b), Err(FsError::NotFound));
}

#[test]
fn stats_count_writes_unsynced_bytes_and_power_losses() {
    let mut fs = Fs::new();
    let f = fs.durable_file(ROOT, "f", b"12");
    fs.write(f, 2, b"345");
    let s = fs.m.stats();
    assert_eq!(s.writes, 2);
    assert_eq!(s.bytes_unsynced, 3);
    assert_eq!(s.files_unsynced, 1);
    assert_eq!(s.fsyncs, 1);
    assert_eq!(s.fsyncdirs, 1);
    fs.create(ROOT, "g");
    assert_eq!(fs.m.stats().dirs_unsynced, 1);
    fs.power_loss(None);
    let s = fs.m.stats();
    assert_eq!(s.power_losses, 1);
    assert_eq!(s.bytes_dropped_last, 3);
    assert_eq!(
        (s.bytes_unsynced, s.files_unsynced, s.dirs_unsynced),
        (0, 0, 0)
    );
}

#[test]
fn loaded_entries_are_durable() {
    let mut m = Model::new(meta());
    let d = m.load_dir(ROOT, n("d"), meta()).unwrap();
    let f = m.load_file(d, n("f"), 42, meta()).unwrap();
    assert_eq!(m.load_file(d, n("f"), 1, meta()), Err(FsError::Exists));
    m.power_loss(None);
    assert_eq!(m.lookup(ROOT, n("d")), Ok(d));
    assert_eq!(m.lookup(d, n("f")), Ok(f));
    assert_eq!(m.attr(f).map(|a| a.size), Ok(42));
    let pos = m.durable_positions();
    assert_eq!(pos.get(&f), Some(&(d, n("f").to_owned())));
}
