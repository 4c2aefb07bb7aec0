//! One guest WebSocket connection: the upgrade (with its query parameters),
//! the read loop, and the actions (`configureSession`, `onAttachment`,
//! `onMessage`, `deleteAttachment`, `echo`).
//!
//! Answers to a request are sent by the loop as soon as the request is
//! handled; events that happen elsewhere (an upload completing) arrive on
//! the connection's outbox channel, registered for its session token by
//! `configureSession`. A PresignedUrlResponse therefore always reaches the
//! client before the UploadSuccessEvent of an upload to its URL.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::wire::{self, code, GuestError, GuestFaults};
use super::{ConnFaults, IssuedUrl, Outbox};
use crate::faults::FaultSpec;
use crate::s3::{self, origin_from_host, PresignError, PresignRequest};
use crate::AppState;

/// Largest frame accepted from a client; guest requests are small JSON.
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// The `x-amz-tagging` every guest URL signs, shaped like Genesys'.
pub const GUEST_TAGGING: &str = "organizationId=demo&originPlatform=PureCloud";
/// How long a refused connection waits for the client's close reply.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// WebSocket close reasons are limited to 123 bytes.
const MAX_CLOSE_REASON: usize = 123;

/// The connection's settings from the WebSocket URL.
struct Setup {
    deployment_id: String,
    faults: GuestFaults,
    /// Route prefix of the presigned URLs: "" or `/faults/{encoded spec}`.
    put_base: String,
}

impl Setup {
    fn parse(query: &HashMap<String, String>) -> Result<Setup, String> {
        let deployment_id = query
            .get("deploymentId")
            .filter(|d| !d.is_empty())
            .ok_or("deploymentId is required")?
            .clone();
        let faults = GuestFaults::parse(query.get("faults").map_or("", String::as_str))
            .map_err(|e| format!("bad faults: {e}"))?;
        let put_base = match query.get("putFaults").filter(|p| !p.trim().is_empty()) {
            None => String::new(),
            Some(spec) => {
                FaultSpec::parse(spec).map_err(|e| format!("bad putFaults: {e}"))?;
                format!("/faults/{}", wire::encode_segment(spec))
            }
        };
        Ok(Setup {
            deployment_id,
            faults,
            put_base,
        })
    }
}

/// `GET /guest/v1?deploymentId=…[&faults=…][&putFaults=…]`. Origin is not
/// checked (Genesys serves pages on any site). Bad parameters still
/// upgrade, then close with 1008 and the reason, which a browser can read
/// (a refused upgrade only shows as 1006 without a reason).
pub(crate) async fn upgrade(
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let origin = origin_from_host(&headers);
    let setup = Setup::parse(&query);
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            match setup {
                Ok(setup) => run(app, setup, origin, socket).await,
                Err(reason) => refuse(socket, &reason).await,
            }
        })
}

/// Closes with 1008 (policy violation) and `reason`, then waits for the
/// client's close reply so the close handshake completes cleanly.
async fn refuse(mut socket: WebSocket, reason: &str) {
    eprintln!("WS /guest/v1 closed 1008: {reason}");
    let mut cut = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let frame = CloseFrame {
        code: close_code::POLICY,
        reason: reason[..cut].into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

/// What one turn of the loop produced.
enum Step {
    Replies(Vec<Value>),
    Event(String),
    Skip,
    Stop,
}

struct Conn {
    app: AppState,
    id: u64,
    deployment_id: String,
    faults: Arc<ConnFaults>,
    put_base: String,
    /// `http://host` the client connected to: presigned and download URLs
    /// point there, so a page on that origin can PUT and fetch.
    origin: String,
    /// Set by `configureSession`.
    token: Option<String>,
    tx: mpsc::UnboundedSender<String>,
}

/// Serves one accepted connection until either side closes it.
async fn run(app: AppState, setup: Setup, origin: String, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut conn = Conn {
        id: app.guest.next_conn_id(),
        app,
        deployment_id: setup.deployment_id,
        faults: Arc::new(ConnFaults::new(setup.faults)),
        put_base: setup.put_base,
        origin,
        token: None,
        tx,
    };
    eprintln!(
        "WS /guest/v1 open conn={} faults={}",
        conn.id, conn.faults.spec
    );
    loop {
        let step = tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => Step::Replies(conn.handle(text.as_str()).await),
                Some(Ok(Message::Binary(_))) => Step::Replies(vec![wire::string_response(
                    code::BAD_REQUEST,
                    "messages must be JSON text frames",
                )]),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Step::Skip,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Step::Stop,
            },
            // Never `None`: `conn` holds a sender.
            Some(text) = rx.recv() => Step::Event(text),
        };
        let out: Vec<String> = match step {
            Step::Replies(replies) => replies.iter().map(Value::to_string).collect(),
            Step::Event(text) => vec![text],
            Step::Skip => continue,
            Step::Stop => break,
        };
        let mut failed = false;
        for text in out {
            if socket.send(Message::Text(text.into())).await.is_err() {
                failed = true;
                break;
            }
        }
        if failed {
            break;
        }
    }
    if let Some(token) = &conn.token {
        conn.app.guest.detach(token, conn.id);
    }
    eprintln!("WS /guest/v1 closed conn={}", conn.id);
}

impl Conn {
    /// One request frame → its answers (usually one).
    async fn handle(&mut self, text: &str) -> Vec<Value> {
        let Ok(request) = serde_json::from_str::<Value>(text) else {
            return vec![wire::string_response(
                code::BAD_REQUEST,
                "message is not valid JSON",
            )];
        };
        let action = request.get("action").and_then(Value::as_str);
        let token = request.get("token").and_then(Value::as_str);
        if let Some(t) = token.or(self.token.as_deref()) {
            self.app.guest.log_request(t, action.unwrap_or_default());
        }
        let replies = match action {
            None => vec![wire::string_response(
                code::BAD_REQUEST,
                "action is required",
            )],
            Some("configureSession") => vec![self.configure(&request)],
            Some(action) => match (self.token.as_deref(), token) {
                (Some(ours), Some(theirs)) if ours == theirs => {
                    self.dispatch(action, &request).await
                }
                // Before configureSession, or a token that is not this
                // connection's session.
                _ => vec![wire::string_response(
                    code::SESSION_NOT_FOUND,
                    "session not found",
                )],
            },
        };
        let answered: Vec<String> = replies
            .iter()
            .map(|r| format!("{} {}", r["class"].as_str().unwrap_or_default(), r["code"]))
            .collect();
        // Actions and classes only: tokens and file names stay out of logs.
        eprintln!(
            "WS /guest/v1 {} {}",
            action.map_or("-", |a| if a.len() > 40 { "(long)" } else { a }),
            answered.join(", ")
        );
        replies
    }

    async fn dispatch(&mut self, action: &str, request: &Value) -> Vec<Value> {
        match action {
            "onAttachment" => vec![self.on_attachment(request)],
            "onMessage" => self.on_message(request),
            "deleteAttachment" => vec![self.delete_attachment(request).await],
            "echo" => vec![echo(request)],
            _ => vec![wire::string_response(code::BAD_REQUEST, "unknown action")],
        }
    }

    fn configure(&mut self, request: &Value) -> Value {
        if let Some(field) = wire::missing_field(request, &["token", "deploymentId"]) {
            return wire::missing_parameter(field);
        }
        let Some(token) = non_empty(request, "token") else {
            return wire::string_response(code::BAD_REQUEST, "token must be a non-empty string");
        };
        let Some(deployment) = non_empty(request, "deploymentId") else {
            return wire::string_response(
                code::BAD_REQUEST,
                "deploymentId must be a non-empty string",
            );
        };
        if deployment != self.deployment_id {
            return wire::string_response(
                code::BAD_REQUEST,
                "deploymentId does not match the WebSocket URL",
            );
        }
        if let Some(old) = self.token.as_deref().filter(|old| *old != token) {
            self.app.guest.detach(old, self.id);
        }
        let outbox = Outbox {
            conn: self.id,
            tx: self.tx.clone(),
        };
        let new_session = self.app.guest.configure(token, outbox);
        self.token = Some(token.to_owned());
        wire::response(
            "SessionResponse",
            200,
            self.app.guest.rules.session_body(new_session),
        )
    }

    fn on_attachment(&self, request: &Value) -> Value {
        let token = self.token.as_deref().unwrap_or_default();
        if self.faults.spec.session_expired {
            return wire::string_response(code::SESSION_EXPIRED, "session has expired");
        }
        if self.faults.take_rate_limit() {
            return wire::response(
                "TooManyRequestsErrorMessage",
                429,
                json!({
                    "retryAfter": self.faults.spec.retry_after_secs(),
                    "errorCode": code::RATE_LIMITED,
                    "errorMessage": "Message rate too high for this session",
                }),
            );
        }
        // As when the deployment's attachments are switched off: Genesys
        // refuses the request as a whole, before looking at the file.
        if self.faults.spec.attachments_off || self.app.guest.rules.file_types.is_empty() {
            return wire::string_response(
                code::FEATURE_UNAVAILABLE,
                "feature unavailable: attachments are disabled for this deployment",
            );
        }
        let required = ["attachmentId", "fileName", "fileType", "fileSize"];
        if let Some(field) = wire::missing_field(request, &required) {
            return wire::missing_parameter(field);
        }
        let as_json = request.get("errorsAsJson").and_then(Value::as_bool) == Some(true);
        let (Some(id), Some(file_name), Some(file_type), Some(size)) = (
            non_empty(request, "attachmentId"),
            request.get("fileName").and_then(Value::as_str),
            request.get("fileType").and_then(Value::as_str),
            request.get("fileSize").and_then(Value::as_u64),
        ) else {
            return wire::string_response(
                code::BAD_REQUEST,
                "onAttachment needs a non-empty string attachmentId, string fileName and \
                 fileType, and a whole number fileSize",
            );
        };
        let md5 = request.get("fileMd5").and_then(Value::as_str);
        let refuse = |e: GuestError| {
            if as_json {
                wire::message(
                    "GenerateUrlError",
                    200,
                    json!({"attachmentId": id, "errorCode": e.code, "errorMessage": e.message}),
                )
            } else {
                e.to_string_response()
            }
        };
        if let Err(e) = self.app.guest.rules.validate(file_name, file_type, size) {
            return refuse(e);
        }
        // The guest rules may allow more than the store (`--max-size`).
        if size > self.app.max_size {
            return refuse(GuestError::new(
                code::FILE_SIZE,
                format!("file size is greater than {} bytes", self.app.max_size),
            ));
        }
        if let Err(e) = self.app.guest.check_owner(token, id) {
            return e.to_string_response();
        }
        let mut req = PresignRequest::new(file_name, file_type, size);
        req.headers
            .insert(s3::TAGGING_HEADER.to_owned(), GUEST_TAGGING.to_owned());
        req.expired = self.faults.take_expired_url();
        let p = match s3::presign_put(&self.app, &self.put_base, req) {
            Ok(p) => p,
            Err(PresignError::NoStore) => {
                return wire::string_response(503, "attachments need an object store");
            }
            Err(e) => {
                return wire::string_response(500, &format!("cannot presign: {e}"));
            }
        };
        self.app.guest.url_issued(IssuedUrl {
            token,
            id,
            file_name,
            file_type,
            size,
            md5,
            key: &p.key,
            faults: self.faults.clone(),
            origin: &self.origin,
        });
        super::watch_upload(self.app.clone(), p.key.clone(), p.expires);
        // Genesys lists only the extra signed headers; the PUT must also
        // send `Content-Type: <fileType>`, which is signed too.
        let headers: BTreeMap<String, String> = p
            .headers
            .into_iter()
            .filter(|(name, _)| name != "content-type")
            .collect();
        wire::response(
            "PresignedUrlResponse",
            200,
            json!({
                "attachmentId": id,
                "headers": headers,
                "url": p.url,
                "fileName": file_name,
                "fileSize": size,
                "fileType": file_type,
            }),
        )
    }

    fn on_message(&self, request: &Value) -> Vec<Value> {
        let token = self.token.as_deref().unwrap_or_default();
        let bad = |text: &str| vec![wire::string_response(code::BAD_REQUEST, text)];
        if wire::missing_field(request, &["message"]).is_some() {
            return vec![wire::missing_parameter("message")];
        }
        let Some(message) = request.get("message").and_then(Value::as_object) else {
            return bad("message must be an object");
        };
        let text = message.get("text").and_then(Value::as_str);
        let content = match message.get("content") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(_) => return bad("message.content must be an array"),
        };
        let mut ids = Vec::new();
        for item in &content {
            if item.get("contentType").and_then(Value::as_str) == Some("Attachment") {
                match item.pointer("/attachment/id") {
                    Some(Value::String(id)) => ids.push(id.clone()),
                    None | Some(Value::Null) => {
                        return vec![wire::missing_parameter("attachment.id")]
                    }
                    Some(_) => return bad("attachment.id must be a string"),
                }
            }
        }
        if text.is_some_and(|t| t.encode_utf16().count() > wire::MAX_TEXT_LENGTH) {
            return vec![wire::string_response(
                code::MESSAGE_TOO_LONG,
                "message too long",
            )];
        }
        let custom = match message
            .get("channel")
            .and_then(|c| c.pointer("/metadata/customAttributes"))
        {
            None | Some(Value::Null) => None,
            Some(Value::Object(attrs)) => Some(attrs),
            Some(_) => return bad("channel.metadata.customAttributes must be an object"),
        };
        if let Some(attrs) = custom {
            // Measured as the compact JSON the client sent would be, in bytes.
            let size = serde_json::to_vec(attrs).map_or(usize::MAX, |v| v.len());
            if size as u64 > wire::MAX_CUSTOM_DATA_BYTES {
                return vec![wire::string_response(
                    code::CUSTOM_ATTRIBUTES_TOO_LARGE,
                    &format!(
                        "Custom Attributes in channel metadata is larger than {} bytes",
                        wire::MAX_CUSTOM_DATA_BYTES
                    ),
                )];
            }
        }
        if text.unwrap_or_default().is_empty() && content.is_empty() {
            return bad("message has no text and no content");
        }
        let refs = match self.app.guest.message_attachments(token, &ids) {
            Ok(refs) => refs,
            Err(e) => return vec![e.to_string_response()],
        };
        let by_id: HashMap<&str, &super::AttachmentRef> =
            refs.iter().map(|r| (r.id.as_str(), r)).collect();
        let echoed: Vec<Value> = content
            .iter()
            .map(|item| {
                let id = item.pointer("/attachment/id").and_then(Value::as_str);
                let is_attachment =
                    item.get("contentType").and_then(Value::as_str) == Some("Attachment");
                match id.and_then(|id| by_id.get(id)).filter(|_| is_attachment) {
                    Some(r) => json!({
                        "contentType": "Attachment",
                        "attachment": {
                            "id": r.id,
                            "url": r.url,
                            "filename": r.file_name,
                            "mime": r.mime,
                            "mediaType": wire::media_type(&r.mime),
                            "fileSize": r.size,
                            "sha256": r.sha256,
                        }
                    }),
                    None => item.clone(),
                }
            })
            .collect();
        let kind = message
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("Text");
        let mut inbound = structured(kind, "Inbound");
        if let (Some(attrs), Some(channel)) = (custom, inbound.get_mut("channel")) {
            channel["metadata"] = json!({ "customAttributes": attrs });
        }
        if let Some(text) = text {
            inbound.insert("text".into(), json!(text));
        }
        if !echoed.is_empty() {
            inbound.insert("content".into(), Value::Array(echoed));
        }
        let reply = if refs.is_empty() {
            format!("You said: {}", text.unwrap_or_default())
        } else {
            let names: Vec<&str> = refs.iter().map(|r| r.file_name.as_str()).collect();
            format!("Thanks, I received {}.", join_names(&names))
        };
        let mut outbound = structured("Text", "Outbound");
        outbound.insert("text".into(), json!(reply));
        vec![
            wire::message("StructuredMessage", 200, Value::Object(inbound)),
            wire::message("StructuredMessage", 200, Value::Object(outbound)),
        ]
    }

    async fn delete_attachment(&self, request: &Value) -> Value {
        let token = self.token.as_deref().unwrap_or_default();
        if wire::missing_field(request, &["attachmentId"]).is_some() {
            return wire::missing_parameter("attachmentId");
        }
        let Some(id) = non_empty(request, "attachmentId") else {
            return wire::string_response(
                code::BAD_REQUEST,
                "attachmentId must be a non-empty string",
            );
        };
        match self.app.guest.delete(token, id) {
            Ok(keys) => {
                if let Some(store) = self.app.object_store.as_deref() {
                    for key in keys {
                        // Keys that never got an object delete nothing; a store that
                        // cannot be reached leaves the object behind, which is no reason
                        // to fail the deletion the guest asked for.
                        if let Err(e) = store.delete_object(&key).await {
                            eprintln!("chunkup-server: guest: deleting an attachment: {e}");
                        }
                    }
                }
                wire::message(
                    "AttachmentDeletedResponse",
                    200,
                    json!({"attachmentId": id}),
                )
            }
            Err(e) => e.to_string_response(),
        }
    }
}

/// `echo` (the heartbeat of Genesys' own widget): the message back as an
/// Inbound `StructuredMessage` response with an id.
fn echo(request: &Value) -> Value {
    if wire::missing_field(request, &["message"]).is_some() {
        return wire::missing_parameter("message");
    }
    let Some(message) = request.get("message").and_then(Value::as_object) else {
        return wire::string_response(code::BAD_REQUEST, "message must be an object");
    };
    let mut body = message.clone();
    body.insert("direction".into(), json!("Inbound"));
    body.insert("id".into(), json!(wire::new_uuid()));
    wire::response("StructuredMessage", 200, Value::Object(body))
}

/// The common head of a `StructuredMessage` body.
fn structured(kind: &str, direction: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(wire::new_uuid()));
    m.insert(
        "channel".into(),
        json!({"time": wire::rfc3339_now(), "type": "Private"}),
    );
    m.insert("type".into(), json!(kind));
    m.insert("direction".into(), json!(direction));
    m.insert("originatingEntity".into(), json!("Human"));
    m
}

/// `a`, `a and b`, `a, b and c`.
fn join_names(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn non_empty<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_from_query() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>()
        };
        let s = Setup::parse(&q(&[
            ("deploymentId", "d"),
            ("putFaults", "500:1, reset:0.5"),
        ]))
        .expect("valid");
        assert_eq!(s.put_base, "/faults/500%3A1%2C%20reset%3A0.5");
        assert_eq!(s.faults, GuestFaults::default());
        assert!(Setup::parse(&q(&[])).is_err());
        assert!(Setup::parse(&q(&[("deploymentId", "d"), ("faults", "bogus")])).is_err());
        assert!(Setup::parse(&q(&[("deploymentId", "d"), ("putFaults", "500:7")])).is_err());
        let s = Setup::parse(&q(&[("deploymentId", "d"), ("putFaults", " ")])).expect("valid");
        assert_eq!(s.put_base, "");
    }

    #[test]
    fn names() {
        assert_eq!(join_names(&["a"]), "a");
        assert_eq!(join_names(&["a", "b"]), "a and b");
        assert_eq!(join_names(&["a", "b", "c"]), "a, b and c");
    }
}
