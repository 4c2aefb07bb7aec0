//! Disk storage for uploads: `<data-dir>/<id>.bin` holds the bytes received
//! so far and `<data-dir>/<id>.json` (the sidecar) holds length, offset and
//! metadata. Owns the in-memory registry of uploads, id generation, the
//! per-upload locks, and the streaming appender used by PATCH.
//!
//! File names are built only from server-generated ids (16 lowercase hex
//! characters); client-supplied metadata such as `filename` lives only inside
//! the sidecar JSON, so no request can make the server touch a path outside
//! the data directory.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::checksum::{self, Algo};
use crate::faults::{derive_seed, FaultCounters, FaultKind, FaultSpec, Prng};
use crate::ids::random_hex;

/// What the sidecar stores. `metadata_header` keeps the client's original
/// `Upload-Metadata` so HEAD can echo it verbatim, as tus requires.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadMeta {
    pub id: String,
    pub length: u64,
    pub offset: u64,
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub metadata_header: Option<String>,
    #[serde(default)]
    pub created_unix: u64,
}

impl UploadMeta {
    pub fn complete(&self) -> bool {
        self.offset >= self.length
    }
}

/// One upload: its committed state, its lock, its fault stream and counters.
#[derive(Debug)]
pub struct Upload {
    pub id: String,
    /// Serialises PATCH, HEAD and DELETE on this upload, so HEAD reports the
    /// offset after any in-flight PATCH has committed and two PATCHes never
    /// write at once. Held across awaits, hence tokio's mutex.
    pub lock: Arc<tokio::sync::Mutex<()>>,
    meta: Mutex<UploadMeta>,
    rng: Mutex<Prng>,
    /// The `corrupt` fault's own stream (derived from the same seed), so a
    /// spec with `corrupt` rolls the other kinds exactly as one without.
    corrupt_rng: Mutex<Prng>,
    pub faults: FaultCounters,
    /// Body bytes read for this upload by this process, kept or not (a test can tell how
    /// much a client sent twice). Not persisted.
    pub received: AtomicU64,
    deleted: AtomicBool,
    bin: PathBuf,
    sidecar: PathBuf,
    /// SHA-256 state after the first N committed bytes, from the last
    /// `/info`. Committed bytes never change (writes only append past the
    /// committed offset, truncation never goes below it), so the next
    /// `/info` only hashes what was added since.
    hash_cache: Mutex<Option<(u64, Sha256)>>,
}

impl Upload {
    /// A copy of the committed state. Bytes below `offset` never change, so
    /// readers (e.g. `/info`) can use it without taking `lock`.
    pub fn meta(&self) -> UploadMeta {
        lock_std(&self.meta).clone()
    }

    /// Whether DELETE removed this upload while a caller waited for `lock`.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::SeqCst)
    }

    /// Rolls this upload's own fault stream for one HEAD or PATCH.
    pub fn roll(&self, spec: &FaultSpec, allow_reset: bool) -> Option<FaultKind> {
        spec.roll(&mut lock_std(&self.rng), allow_reset)
    }

    /// Rolls the `corrupt` fault for one checksummed PATCH body of
    /// `body_len` bytes: the position of the byte to flip, if it strikes.
    pub fn roll_corrupt(&self, spec: &FaultSpec, body_len: u64) -> Option<u64> {
        spec.roll_corrupt(&mut lock_std(&self.corrupt_rng), body_len)
    }

    /// Uniform in [0, n) from this upload's stream (where a reset cuts).
    pub fn draw_below(&self, n: u64) -> u64 {
        lock_std(&self.rng).below(n)
    }

    pub fn bin_path(&self) -> &Path {
        &self.bin
    }
}

/// std mutexes here guard plain data updated in single steps; a poisoned
/// lock still holds consistent data, so recover instead of panicking.
fn lock_std<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `corrupt` stream of an upload whose main stream has `seed`.
fn corrupt_stream(seed: u64) -> Prng {
    Prng::new(derive_seed(seed, "corrupt"))
}

/// Registry of uploads backed by one data directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    uploads: Mutex<HashMap<String, Arc<Upload>>>,
}

/// Ids are exactly 16 lowercase hex characters; anything else in a URL is an
/// unknown upload and never reaches the filesystem.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Store {
    /// Opens `dir` (creating it) and loads uploads left there by an earlier
    /// run, so a restarted server can still resume them. `seed_for` gives
    /// each reloaded upload its fault stream seed.
    pub fn open(dir: &Path, seed_for: impl Fn(&str) -> u64) -> io::Result<Store> {
        std::fs::create_dir_all(dir)?;
        let store = Store {
            dir: dir.to_path_buf(),
            uploads: Mutex::new(HashMap::new()),
        };
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|id| is_valid_id(id))
                .map(str::to_owned)
            else {
                continue;
            };
            // A sidecar that fails to load is left alone rather than
            // aborting startup: the data dir may hold unrelated files.
            match store.reload(&id, seed_for(&id)) {
                Ok(upload) => {
                    lock_std(&store.uploads).insert(id, Arc::new(upload));
                }
                Err(e) => eprintln!("chunkup-server: skipping upload {id}: {e}"),
            }
        }
        Ok(store)
    }

    fn reload(&self, id: &str, seed: u64) -> io::Result<Upload> {
        let sidecar = self.dir.join(format!("{id}.json"));
        let bin = self.dir.join(format!("{id}.bin"));
        let mut meta: UploadMeta = serde_json::from_slice(&std::fs::read(&sidecar)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        meta.id = id.to_owned();
        // Reconcile with the data file: bytes past the committed offset are
        // from an interrupted PATCH and are discarded; a short file lowers
        // the offset to what is really there.
        let file = std::fs::OpenOptions::new().write(true).open(&bin)?;
        let on_disk = file.metadata()?.len();
        if on_disk > meta.offset {
            file.set_len(meta.offset)?;
        }
        meta.offset = meta.offset.min(on_disk).min(meta.length);
        Ok(Upload {
            id: id.to_owned(),
            lock: Arc::new(tokio::sync::Mutex::new(())),
            meta: Mutex::new(meta),
            rng: Mutex::new(Prng::new(seed)),
            corrupt_rng: Mutex::new(corrupt_stream(seed)),
            faults: FaultCounters::default(),
            received: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
            bin,
            sidecar,
            hash_cache: Mutex::new(None),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn get(&self, id: &str) -> Option<Arc<Upload>> {
        if !is_valid_id(id) {
            return None;
        }
        lock_std(&self.uploads).get(id).cloned()
    }

    /// Creates a new upload with an empty data file and its sidecar.
    pub async fn create(
        &self,
        length: u64,
        metadata: BTreeMap<String, String>,
        metadata_header: Option<String>,
        rng_seed: u64,
    ) -> io::Result<Arc<Upload>> {
        // `create_new` makes an id collision (or a stale file from an
        // earlier run) impossible to overwrite; just pick another id.
        let (id, bin) = loop {
            let id = random_hex::<8>(); // 16 hex characters: see is_valid_id
            let bin = self.dir.join(format!("{id}.bin"));
            match tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&bin)
                .await
            {
                Ok(_) => break (id, bin),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        };
        let meta = UploadMeta {
            id: id.clone(),
            length,
            offset: 0,
            metadata,
            metadata_header,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
        };
        let upload = Upload {
            id: id.clone(),
            lock: Arc::new(tokio::sync::Mutex::new(())),
            meta: Mutex::new(meta.clone()),
            rng: Mutex::new(Prng::new(rng_seed)),
            corrupt_rng: Mutex::new(corrupt_stream(rng_seed)),
            faults: FaultCounters::default(),
            received: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
            sidecar: self.dir.join(format!("{id}.json")),
            bin,
            hash_cache: Mutex::new(None),
        };
        if let Err(e) = write_sidecar(&upload.sidecar, &meta).await {
            let _ = tokio::fs::remove_file(&upload.bin).await;
            return Err(e);
        }
        let upload = Arc::new(upload);
        lock_std(&self.uploads).insert(id, upload.clone());
        Ok(upload)
    }

    /// Records a new committed offset (memory first, then the sidecar).
    /// Callers hold `upload.lock` and have already flushed the data file.
    pub async fn commit(&self, upload: &Upload, offset: u64) -> io::Result<()> {
        let meta = {
            let mut m = lock_std(&upload.meta);
            m.offset = offset;
            m.clone()
        };
        write_sidecar(&upload.sidecar, &meta).await
    }

    /// Cuts the data file back to the committed offset, discarding bytes of
    /// a PATCH that will not be committed (checksum mismatch, reset with a
    /// checksum, write error).
    pub async fn truncate_to_committed(&self, upload: &Upload) -> io::Result<()> {
        let offset = upload.meta().offset;
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&upload.bin)
            .await?;
        file.set_len(offset).await
    }

    /// Removes the upload from the registry and deletes its files. Callers
    /// hold `upload.lock`.
    pub async fn delete(&self, upload: &Upload) -> io::Result<()> {
        upload.deleted.store(true, Ordering::SeqCst);
        lock_std(&self.uploads).remove(&upload.id);
        let bin = tokio::fs::remove_file(&upload.bin).await;
        let side = tokio::fs::remove_file(&upload.sidecar).await;
        bin.and(side)
    }

    /// Lowercase hex SHA-256 of the committed bytes. Reads the file (up to
    /// the committed offset only, so an in-flight PATCH does not show),
    /// resuming from the cached state of an earlier call.
    pub async fn sha256_committed(&self, upload: &Arc<Upload>) -> io::Result<String> {
        let upload = upload.clone();
        tokio::task::spawn_blocking(move || {
            let offset = upload.meta().offset;
            let (mut done, mut hasher) = lock_std(&upload.hash_cache)
                .clone()
                .filter(|(n, _)| *n <= offset)
                .unwrap_or_else(|| (0, Sha256::new()));
            let mut file = std::fs::File::open(&upload.bin)?;
            file.seek(SeekFrom::Start(done))?;
            let mut file = file.take(offset - done);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                done += n as u64;
            }
            if done != offset {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "data file shorter than committed offset",
                ));
            }
            *lock_std(&upload.hash_cache) = Some((offset, hasher.clone()));
            Ok(checksum::hex(&hasher.finalize()))
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// Writes the sidecar atomically (temp file + rename) so a crash never
/// leaves a half-written JSON file.
async fn write_sidecar(path: &Path, meta: &UploadMeta) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    tokio::fs::write(&tmp, json).await?;
    tokio::fs::rename(&tmp, path).await
}

/// Result of streaming a PATCH body to disk.
#[derive(Debug)]
pub struct Appended {
    pub written: u64,
    /// Digest of the written bytes when a checksum algorithm was requested
    /// (the first of `digests`).
    pub digest: Option<Vec<u8>>,
    /// One digest per requested algorithm, in the order requested.
    pub digests: Vec<Vec<u8>>,
}

/// Streams body chunks into the data file on a blocking thread, hashing
/// them on the way when a checksum must be verified. Moving the disk writes
/// and hashing off the async thread lets socket reads continue in parallel,
/// which is what keeps large PATCHes fast.
pub struct Appender {
    tx: mpsc::Sender<Bytes>,
    worker: JoinHandle<io::Result<Appended>>,
}

impl Appender {
    /// Starts writing at `offset` (anything already past it is dropped).
    pub fn start(path: &Path, offset: u64, algo: Option<Algo>) -> Appender {
        Appender::start_hashing(path, offset, algo.into_iter().collect())
    }

    /// Like [`Appender::start`], computing several digests in one pass (the
    /// S3-style PUT needs both SHA-256 and MD5).
    pub fn start_hashing(path: &Path, offset: u64, algos: Vec<Algo>) -> Appender {
        // A handful of in-flight chunks is enough to overlap network and
        // disk while bounding memory.
        let (tx, mut rx) = mpsc::channel::<Bytes>(32);
        let path = path.to_path_buf();
        let worker = tokio::task::spawn_blocking(move || {
            let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
            file.set_len(offset)?;
            file.seek(SeekFrom::Start(offset))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let mut hashers: Vec<checksum::Hasher> = algos.into_iter().map(Algo::hasher).collect();
            let mut written = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                for h in hashers.iter_mut() {
                    h.update(&chunk);
                }
                out.write_all(&chunk)?;
                written += chunk.len() as u64;
            }
            out.flush()?;
            let digests: Vec<Vec<u8>> = hashers.into_iter().map(checksum::Hasher::finish).collect();
            Ok(Appended {
                written,
                digest: digests.first().cloned(),
                digests,
            })
        });
        Appender { tx, worker }
    }

    /// Queues a chunk. Fails only if the writer already stopped on an I/O
    /// error; `finish` then reports that error.
    pub async fn push(&self, chunk: Bytes) -> Result<(), ()> {
        self.tx.send(chunk).await.map_err(|_| ())
    }

    /// Waits until every queued byte is written and flushed.
    pub async fn finish(self) -> io::Result<Appended> {
        drop(self.tx);
        self.worker.await.map_err(io::Error::other)?
    }
}
