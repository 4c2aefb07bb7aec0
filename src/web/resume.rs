//! Resume records in the browser: looked up before an upload starts, stored once the
//! server knows the upload, removed when it ends (success or abort), through the IndexedDB
//! store of src/js/io.js. What a record holds and when it is usable is decided in
//! `core::resume`; storage that fails or is missing never fails an upload.
//!
//! An upload claims its record first (a Web Lock, across tabs and Workers): two uploads of
//! the same file to the same place at once (two tabs, or a second call) would otherwise
//! both continue one upload on the server and trip over each other. The second goes on
//! without a record: a fresh upload, which leaves the first one's record alone.

use js_sys::{Array, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::core::options::ProtocolKind;
use crate::core::resume::{to_prune, FileIdentity, ResumePolicy, ResumeRecord, ResumeTarget};
use crate::web::convert::{from_js, to_js};
use crate::web::js::settle;
use crate::web::options::UploadInput;

#[wasm_bindgen(module = "/src/js/io.js")]
extern "C" {
    #[wasm_bindgen(js_name = recordGet)]
    fn record_get(key: &str) -> Promise;
    #[wasm_bindgen(js_name = recordPut)]
    fn record_put(key: &str, value: &JsValue) -> Promise;
    #[wasm_bindgen(js_name = recordDelete)]
    fn record_delete(key: &str) -> Promise;
    #[wasm_bindgen(js_name = recordList)]
    fn record_list() -> Promise;
    #[wasm_bindgen(js_name = claimRecord)]
    fn claim_record(key: &str, signal: &JsValue) -> Promise;
}

/// The resume record of one upload, claimed for it until it is dropped.
pub struct Resume {
    key: String,
    policy: ResumePolicy,
    protocol: &'static str,
    size: u64,
    /// Gives the claim back (ends the Web Lock).
    release: Option<js_sys::Function>,
}

impl Drop for Resume {
    fn drop(&mut self) {
        if let Some(release) = &self.release {
            let _ = release.call0(&JsValue::NULL);
        }
    }
}

impl Resume {
    /// The record for `input`, when resuming is on and possible: tus, range or s3, and a `File`
    /// (a plain Blob has no name or date to be recognised by, so any Blob of the same size
    /// would match: never resumed).
    /// `None` as well when another upload (another tab) still holds the same record after a
    /// short wait.
    pub async fn claim_for(input: &UploadInput) -> Option<Resume> {
        let mut resume = Resume::for_upload(input)?;
        let signal = crate::web::io::signal_arg(&input.signal);
        let release = settle(claim_record(&resume.key, &signal)).await.ok()?;
        resume.release = Some(release.dyn_into().ok()?);
        Some(resume)
    }

    fn for_upload(input: &UploadInput) -> Option<Resume> {
        let policy = input.resume?;
        let protocol = input.settings.protocol;
        if protocol == ProtocolKind::Put {
            return None;
        }
        let file = crate::web::options::as_file(&input.blob)?;
        let name = file.name();
        let identity = FileIdentity {
            name: &name,
            size: input.size,
            last_modified: file.last_modified(),
            endpoint: &input.settings.endpoint,
            protocol: protocol.name(),
            destination: &destination(input),
        };
        Some(Resume {
            key: identity.key(),
            policy,
            protocol: protocol.name(),
            size: input.size,
            release: None,
        })
    }

    /// Where to continue from, if a usable record is stored; an unusable one is removed.
    pub async fn stored(&self) -> Option<ResumeTarget> {
        let stored = settle(record_get(&self.key)).await.ok()?;
        if stored.is_null() || stored.is_undefined() {
            return None;
        }
        let record = ResumeRecord::from_value(&from_js(&stored));
        match record
            .filter(|r| r.usable(self.protocol, self.size, js_sys::Date::now(), &self.policy))
        {
            Some(record) => Some(record.target),
            None => {
                self.forget().await;
                None
            }
        }
    }

    /// Stores `target` as where this upload continues, then prunes the store (in the
    /// background: nothing waits for it).
    pub fn save(&self, target: ResumeTarget) {
        let record = ResumeRecord {
            target,
            protocol: self.protocol.to_owned(),
            size: self.size,
            saved_ms: js_sys::Date::now(),
        };
        // Asked for now, not in the spawned task: a `forget` that follows then reaches the
        // store after it, and no record outlives its upload.
        let put = record_put(&self.key, &to_js(&record.to_value()));
        let policy = self.policy;
        wasm_bindgen_futures::spawn_local(async move {
            let _ = settle(put).await;
            prune(&policy).await;
        });
    }

    /// Removes the record (the upload finished, or was aborted).
    pub async fn forget(&self) {
        let _ = settle(record_delete(&self.key)).await;
    }
}

/// Removes expired records and the oldest beyond the policy's count.
async fn prune(policy: &ResumePolicy) {
    let Ok(listed) = settle(record_list()).await else {
        return;
    };
    let records: Vec<(String, Option<f64>)> = listed
        .dyn_into::<Array>()
        .map(|list| {
            list.iter()
                .filter_map(|entry| {
                    let pair: Array = entry.dyn_into().ok()?;
                    Some((pair.get(0).as_string()?, pair.get(1).as_f64()))
                })
                .collect()
        })
        .unwrap_or_default();
    for key in to_prune(&records, js_sys::Date::now(), policy) {
        let _ = settle(record_delete(&key)).await;
    }
}

/// What decides where the file lands besides the endpoint, for the record's key: `s3`'s
/// `createMultipartUpload` name, type and metadata, or the `Upload-Metadata` pairs, in the
/// order given (the same code gives them in the same order; sorting would add 3.5 KB of
/// std's sort to the wasm for the rare caller who reorders them).
fn destination(input: &UploadInput) -> Vec<&str> {
    let (fixed, pairs) = match &input.multipart {
        Some(multipart) => (
            vec![multipart.name.as_str(), multipart.kind.as_str()],
            &multipart.metadata,
        ),
        None => (Vec::new(), &input.settings.metadata),
    };
    fixed
        .into_iter()
        .chain(pairs.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]))
        .collect()
}
