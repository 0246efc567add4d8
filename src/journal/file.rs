//! The log in a real directory: `DIR/appendonly.pollen`, locked by `DIR/LOCK` so that two
//! workers never share one, and `DIR/appendonly.pollen.rewrite` while a rewrite runs (renamed
//! over the log when complete; a leftover one is an interrupted rewrite and is removed).
//!
//! `everysec` syncs on a helper thread (as Redis's bio does), so that a slow disk stalls the
//! thread, not the event loop; the thread only ever calls `sync_data` on a duplicate handle.
//! `always` syncs on the loop, before acknowledgements leave. A rewrite's new log is synced by
//! the helper every `REWRITE_SYNC_BYTES` as it is written, so that the sync before the rename,
//! on the loop, finds little left to write.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::{EVERYSEC_US, Fsync, HEADER_BYTES, Journal, MAGIC, Record, Replayed};
use crate::info;
use crate::node::Micros;

const LOG: &str = "appendonly.pollen";
const REWRITE: &str = "appendonly.pollen.rewrite";
/// Initial capacity of the append buffers.
const BUFFER_BYTES: usize = 1 << 20;
/// A rewrite's new log is synced in the background each time this much more was written.
const REWRITE_SYNC_BYTES: u64 = 8 << 20;

struct Rewrite {
    file: File,
    buffer: Vec<u8>,
    bytes: u64,
    /// `bytes` when the helper was last asked to sync the new log.
    synced_at: u64,
}

pub struct FileJournal {
    dir: PathBuf,
    policy: Fsync,
    file: File,
    /// Held for the journal's life: the directory's lock.
    _lock: File,
    bytes: u64,
    buffer: Vec<u8>,
    /// Written since the last sync.
    unsynced: bool,
    last_sync: Micros,
    /// Duplicate handles to sync, to the helper thread.
    syncer: mpsc::SyncSender<File>,
    rewrite: Option<Rewrite>,
}

fn context(what: &str, path: &Path) -> impl Fn(std::io::Error) -> String {
    let place = format!("{what} {}", path.display());
    move |error| format!("{place}: {error}")
}

impl FileJournal {
    /// Opens (creating) the log in `dir` and takes the directory's lock.
    pub fn open(dir: &Path, policy: Fsync) -> Result<FileJournal, String> {
        std::fs::create_dir_all(dir).map_err(context("cannot create", dir))?;
        let lock_path = dir.join("LOCK");
        let lock = File::create(&lock_path).map_err(context("cannot create", &lock_path))?;
        if lock.try_lock().is_err() {
            return Err(format!(
                "{} is in use by another worker (locked)",
                dir.display()
            ));
        }
        let leftover = dir.join(REWRITE);
        if leftover.exists() {
            info!(
                "warning: removing {} (an interrupted rewrite)",
                leftover.display()
            );
            std::fs::remove_file(&leftover).map_err(context("cannot remove", &leftover))?;
        }
        let path = dir.join(LOG);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(context("cannot open", &path))?;
        let (syncer, receiver) = mpsc::sync_channel::<File>(1);
        std::thread::Builder::new()
            .name("fsync".into())
            .spawn(move || {
                for file in receiver {
                    if let Err(error) = file.sync_data() {
                        info!("warning: background fsync failed: {error}");
                    }
                }
            })
            .map_err(|error| format!("cannot start the fsync thread: {error}"))?;
        Ok(FileJournal {
            dir: dir.to_path_buf(),
            policy,
            file,
            _lock: lock,
            bytes: 0,
            buffer: Vec::with_capacity(BUFFER_BYTES),
            unsynced: false,
            last_sync: 0,
            syncer,
            rewrite: None,
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.join(LOG)
    }

    fn write_out(&mut self) -> Result<(), String> {
        if !self.buffer.is_empty() {
            let path = self.path();
            self.file
                .write_all(&self.buffer)
                .map_err(context("cannot write", &path))?;
            self.buffer.clear();
            self.unsynced = true;
        }
        if let Some(rewrite) = &mut self.rewrite
            && !rewrite.buffer.is_empty()
        {
            let path = self.dir.join(REWRITE);
            rewrite
                .file
                .write_all(&rewrite.buffer)
                .map_err(context("cannot write", &path))?;
            rewrite.buffer.clear();
            if rewrite.bytes - rewrite.synced_at >= REWRITE_SYNC_BYTES {
                let handle = rewrite
                    .file
                    .try_clone()
                    .map_err(context("cannot dup", &path))?;
                if self.syncer.try_send(handle).is_ok() {
                    rewrite.synced_at = rewrite.bytes;
                }
            }
        }
        Ok(())
    }
}

impl Journal for FileJournal {
    fn fsync(&self) -> Fsync {
        self.policy
    }

    fn replay(&mut self, apply: &mut dyn FnMut(Record<'_>)) -> Result<Replayed, String> {
        let path = self.path();
        let length = self
            .file
            .metadata()
            .map_err(context("cannot stat", &path))?
            .len();
        let mut header = [0u8; HEADER_BYTES];
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(context("cannot seek", &path))?;
        let got = (&self.file)
            .read(&mut header)
            .map_err(context("cannot read", &path))?;
        let fresh = super::header();
        if (length as usize) < HEADER_BYTES {
            // Empty, or torn while being created: start it over.
            if length > 0 {
                if header[..got] != fresh[..got] {
                    return Err(format!("{} is not a pollen kv log", path.display()));
                }
                info!("warning: {}: torn header, starting it over", path.display());
            }
            self.file
                .set_len(0)
                .map_err(context("cannot truncate", &path))?;
            self.file
                .write_all(&fresh)
                .map_err(context("cannot write", &path))?;
            self.file
                .sync_all()
                .map_err(context("cannot sync", &path))?;
            self.bytes = HEADER_BYTES as u64;
            return Ok(Replayed::default());
        }
        if &header[..8] != MAGIC {
            return Err(format!("{} is not a pollen kv log", path.display()));
        }
        if header[8..12] != fresh[8..12] {
            return Err(format!("{}: unknown log format", path.display()));
        }
        let replayed = super::replay(&self.file, apply).map_err(context("cannot read", &path))?;
        let valid = HEADER_BYTES as u64 + replayed.valid_bytes;
        if replayed.dropped_bytes > 0 {
            info!(
                "warning: {}: {} after {} records; truncating {} bytes at offset {valid}",
                path.display(),
                replayed.reason.unwrap_or("trailing bytes"),
                replayed.records,
                replayed.dropped_bytes
            );
            self.file
                .set_len(valid)
                .map_err(context("cannot truncate", &path))?;
            self.file
                .sync_all()
                .map_err(context("cannot sync", &path))?;
        }
        self.bytes = valid;
        Ok(replayed)
    }

    fn append(&mut self, record: &Record<'_>) {
        record.append_to(&mut self.buffer);
        self.bytes += record.encoded_len() as u64;
        if let Some(rewrite) = &mut self.rewrite {
            record.append_to(&mut rewrite.buffer);
            rewrite.bytes += record.encoded_len() as u64;
        }
    }

    fn commit(&mut self, now: Micros) -> Result<(), String> {
        self.write_out()?;
        if !self.unsynced {
            return Ok(());
        }
        match self.policy {
            Fsync::Always => {
                let path = self.path();
                self.file
                    .sync_data()
                    .map_err(context("cannot sync", &path))?;
                self.unsynced = false;
            }
            Fsync::EverySec if now.saturating_sub(self.last_sync) >= EVERYSEC_US => {
                let path = self.path();
                let handle = self
                    .file
                    .try_clone()
                    .map_err(context("cannot dup", &path))?;
                // Full: a sync is still running; the next commit asks again.
                if self.syncer.try_send(handle).is_ok() {
                    self.unsynced = false;
                    self.last_sync = now;
                }
            }
            Fsync::EverySec | Fsync::No => {}
        }
        Ok(())
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn rewrite_begin(&mut self) -> Result<(), String> {
        let path = self.dir.join(REWRITE);
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(context("cannot create", &path))?;
        file.set_len(0).map_err(context("cannot truncate", &path))?;
        file.write_all(&super::header())
            .map_err(context("cannot write", &path))?;
        self.rewrite = Some(Rewrite {
            file,
            buffer: Vec::with_capacity(BUFFER_BYTES),
            bytes: HEADER_BYTES as u64,
            synced_at: 0,
        });
        Ok(())
    }

    fn rewrite_append(&mut self, record: &Record<'_>) {
        if let Some(rewrite) = &mut self.rewrite {
            record.append_to(&mut rewrite.buffer);
            rewrite.bytes += record.encoded_len() as u64;
        }
    }

    fn rewrite_finish(&mut self) -> Result<(), String> {
        self.write_out()?;
        let Some(rewrite) = self.rewrite.take() else {
            return Ok(());
        };
        let from = self.dir.join(REWRITE);
        let to = self.path();
        rewrite
            .file
            .sync_all()
            .map_err(context("cannot sync", &from))?;
        std::fs::rename(&from, &to).map_err(context("cannot rename", &from))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(context("cannot sync", &self.dir))?;
        self.file = rewrite.file;
        self.bytes = rewrite.bytes;
        self.unsynced = false;
        Ok(())
    }
}
