//! The Genesys-style guest API over a real WebSocket client, its attachments stored in a
//! real Garage cluster: session rules, the attachment flow end to end (presigned URL, a
//! real PUT to Garage, the upload event once the server found and checked the object,
//! the download streamed from Garage), every validation error in both forms, the refusals
//! 4000, 4011, 4013 and 4020, the guest fault spec (putFaults through a chunkup-server
//! proxy in front of Garage), messages, deletion, and the JSON introspection.

mod common;

use std::time::Duration;

use chunkup_server::guest::GuestRules;
use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use md5::{Digest as _, Md5};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const DEPLOYMENT: &str = "dep-1";
const TAGGING: &str = "organizationId=demo&originPlatform=PureCloud";

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Opens `/guest/v1?{query}` (the deploymentId is added unless given).
async fn connect(ts: &TestServer, query: &str) -> Ws {
    let mut q = query.to_owned();
    if !q.contains("deploymentId=") {
        q = format!("deploymentId={DEPLOYMENT}&{q}");
    }
    let url = format!("ws://{}/guest/v1?{q}", ts.addr);
    let (ws, res) = connect_async(url).await.expect("WebSocket connects");
    assert_eq!(res.status().as_u16(), 101);
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next text frame as JSON (fails after 5 s).
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(text) = msg {
            return serde_json::from_str(text.as_str()).expect("JSON frame");
        }
    }
}

/// Asserts that nothing arrives for a while.
async fn silence(ws: &mut Ws) {
    if let Ok(got) = tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
        panic!("expected no message, got {got:?}");
    }
}

async fn request(ws: &mut Ws, v: Value) -> Value {
    send(ws, v).await;
    recv(ws).await
}

/// Connects and configures a session with `token`.
async fn session(ts: &TestServer, query: &str, token: &str) -> Ws {
    let mut ws = connect(ts, query).await;
    let res = request(
        &mut ws,
        json!({"action": "configureSession", "token": token, "deploymentId": DEPLOYMENT,
               "journeyContext": {"customer": {"id": token, "idType": "cookie"}}}),
    )
    .await;
    assert_eq!(res["class"], "SessionResponse", "{res}");
    ws
}

fn on_attachment(token: &str, id: &str, name: &str, ty: &str, size: usize) -> Value {
    json!({"action": "onAttachment", "token": token, "attachmentId": id, "fileName": name,
           "fileType": ty, "fileSize": size, "errorsAsJson": true})
}

/// PUTs `data` to a PresignedUrlResponse's URL (the store's) with its headers and the
/// declared Content-Type, as the client does.
async fn put(_ts: &TestServer, presigned: &Value, data: &[u8]) -> Resp {
    let body = &presigned["body"];
    let url = body["url"].as_str().expect("url");
    let mut headers: Vec<(String, String)> = body["headers"]
        .as_object()
        .expect("headers")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_owned()))
        .collect();
    headers.push((
        "Content-Type".into(),
        body["fileType"].as_str().expect("fileType").to_owned(),
    ));
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    common::send_url("PUT", url, &h, data).await
}

async fn get_json(ts: &TestServer, path: &str) -> (u16, Value) {
    let res = common::send(ts.addr, "GET", path, &[], b"").await;
    (res.status, res.json())
}

async fn attachment(ts: &TestServer, id: &str) -> Value {
    let (status, v) = get_json(ts, &format!("/guest/attachments/{id}")).await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn requests(ts: &TestServer, token: &str) -> Value {
    let (status, v) = get_json(ts, &format!("/guest/sessions/{token}")).await;
    assert_eq!(status, 200, "{v}");
    v["requests"].clone()
}

/// Requests a URL, uploads `data` and returns the UploadSuccessEvent.
async fn upload(
    ts: &TestServer,
    ws: &mut Ws,
    token: &str,
    id: &str,
    name: &str,
    ty: &str,
    data: &[u8],
) -> Value {
    let p = request(ws, on_attachment(token, id, name, ty, data.len())).await;
    assert_eq!(p["class"], "PresignedUrlResponse", "{p}");
    let res = put(ts, &p, data).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let ev = recv(ws).await;
    assert_eq!(ev["class"], "UploadSuccessEvent", "{ev}");
    ev
}

fn is_rfc3339(t: &Value) -> bool {
    let t = t.as_str().unwrap_or_default();
    t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T'
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configure_session_sends_rules_and_resumes() {
    let ts = start_with_garage(None).await;
    let mut ws = connect(&ts, "").await;
    let res = request(
        &mut ws,
        json!({"action": "configureSession", "token": "t1", "deploymentId": DEPLOYMENT,
               "journeyContext": {}}),
    )
    .await;
    assert_eq!(
        res,
        json!({"type": "response", "class": "SessionResponse", "code": 200, "body": {
            "connected": true, "newSession": true, "readOnly": false, "maxCustomDataBytes": 100,
            "allowedMedia": {"inbound": {"fileTypes": [{"type": "image/*"},
                {"type": "application/pdf"}, {"type": "text/plain"}], "maxFileSizeKB": 51200}},
            "blockedExtensions": [".exe", ".bat", ".cmd", ".js"],
            "clearedExistingSession": false}})
    );
    // Reconnecting with the same token resumes the session, and upload
    // events go to the newest connection.
    let p = request(&mut ws, on_attachment("t1", "a1", "a.txt", "text/plain", 3)).await;
    drop(ws);
    let mut ws2 = connect(&ts, "").await;
    let res = request(
        &mut ws2,
        json!({"action": "configureSession", "token": "t1", "deploymentId": DEPLOYMENT}),
    )
    .await;
    assert_eq!(res["body"]["newSession"], false);
    assert_eq!(put(&ts, &p, b"abc").await.status, 200);
    assert_eq!(recv(&mut ws2).await["class"], "UploadSuccessEvent");

    // A deploymentId that differs from the URL's, or none: 400.
    let res = request(
        &mut ws2,
        json!({"action": "configureSession", "token": "t1", "deploymentId": "other"}),
    )
    .await;
    assert_eq!(res["class"], "string");
    assert_eq!(res["code"], 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_come_from_the_config() {
    let ts = start_with(Opts {
        guest: Some(GuestRules {
            file_types: vec!["*/*".into()],
            max_kb: 1,
            blocked: vec![".sh".into()],
        }),
        store: Some(garage::shared().store_config(None)),
        ..Opts::default()
    })
    .await;
    let mut ws = connect(&ts, "").await;
    let res = request(
        &mut ws,
        json!({"action": "configureSession", "token": "t", "deploymentId": DEPLOYMENT}),
    )
    .await;
    assert_eq!(
        res["body"]["allowedMedia"],
        json!({"inbound": {"fileTypes": [{"type": "*/*"}], "maxFileSizeKB": 1}})
    );
    assert_eq!(res["body"]["blockedExtensions"], json!([".sh"]));
    let ok = request(
        &mut ws,
        on_attachment("t", "a", "x.bin", "application/x-y", 1000),
    )
    .await;
    assert_eq!(ok["class"], "PresignedUrlResponse");
    let big = request(
        &mut ws,
        on_attachment("t", "b", "x.bin", "application/x-y", 1001),
    )
    .await;
    assert_eq!(big["body"]["errorCode"], 4002);
    let sh = request(&mut ws, on_attachment("t", "c", "run.SH", "text/x-sh", 10)).await;
    assert_eq!(sh["body"]["errorCode"], 4001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachment_upload_end_to_end() {
    let ts = start_with_garage(None).await;
    let mut ws = session(&ts, "", "tok").await;
    let data = payload(70_000);
    let mut req = on_attachment(
        "tok",
        "att-1",
        "report 1.pdf",
        "application/pdf",
        data.len(),
    );
    req["fileMd5"] = json!(md5_hex(&data));
    let p = request(&mut ws, req).await;
    assert_eq!(p["type"], "response");
    assert_eq!(p["class"], "PresignedUrlResponse");
    assert_eq!(p["code"], 200);
    let body = &p["body"];
    assert_eq!(body["attachmentId"], "att-1");
    assert_eq!(body["headers"], json!({"x-amz-tagging": TAGGING}));
    assert_eq!(body["fileName"], "report 1.pdf");
    assert_eq!(body["fileSize"], data.len());
    assert_eq!(body["fileType"], "application/pdf");
    let url = body["url"].as_str().expect("url");
    let bucket = format!("{}chunkup/", garage::shared().endpoints[0]);
    assert!(url.starts_with(&bucket), "a URL of the store: {url}");
    let a = attachment(&ts, "att-1").await;
    assert_eq!(a["state"], "requested");
    assert_eq!(a["size"], Value::Null);

    // The PUT must carry the signed tagging header.
    let no_tag = {
        let mut p2 = p.clone();
        p2["body"]["headers"] = json!({});
        put(&ts, &p2, &data).await
    };
    // Garage: a signed header missing is 400 (a different value would be 403).
    assert_eq!(no_tag.status, 400, "{}", no_tag.text());
    silence(&mut ws).await; // a failed PUT is not final: no event

    let res = put(&ts, &p, &data).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let ev = recv(&mut ws).await;
    assert_eq!(ev["type"], "message");
    assert_eq!(ev["class"], "UploadSuccessEvent");
    assert_eq!(ev["code"], 200);
    assert_eq!(ev["body"]["attachmentId"], "att-1");
    let download = format!("http://{}/guest/files/att-1/report%201.pdf", ts.addr);
    assert_eq!(ev["body"]["downloadUrl"], download);
    assert!(is_rfc3339(&ev["body"]["timestamp"]), "{ev}");

    let a = attachment(&ts, "att-1").await;
    assert_eq!(
        a,
        json!({"attachmentId": "att-1", "fileName": "report 1.pdf", "fileType": "application/pdf",
               "declaredSize": data.len(), "size": data.len(), "sha256": sha256_hex(&data),
               "md5": md5_hex(&data), "state": "uploaded", "urlRequests": 1})
    );

    // The download, with CORS.
    let path = "/guest/files/att-1/report%201.pdf";
    let res = common::send(ts.addr, "GET", path, &[("Origin", "http://elsewhere")], b"").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, data);
    assert_eq!(res.header("content-type"), Some("application/pdf"));
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    let wrong = common::send(ts.addr, "GET", "/guest/files/att-1/other.pdf", &[], b"").await;
    assert_eq!(wrong.status, 404);
    let (status, _) = get_json(&ts, "/guest/attachments/nope").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_in_both_forms() {
    let ts = start_with_garage(None).await;
    let mut ws = session(&ts, "", "tok").await;
    let long = format!("{}.txt", "n".repeat(252));
    let cases: [(&str, &str, usize, u32); 7] = [
        ("a.zip", "application/zip", 10, 4001),
        ("setup.EXE", "image/png", 10, 4001),
        ("a.png", "image/png", 51_200_001, 4002),
        ("a.png", "image/png", 0, 4002),
        ("dir/a.png", "image/png", 10, 4004),
        ("", "image/png", 10, 4004),
        (&long, "text/plain", 10, 4005),
    ];
    for (i, (name, ty, size, code)) in cases.into_iter().enumerate() {
        let id = format!("bad-{i}");
        let res = request(&mut ws, on_attachment("tok", &id, name, ty, size)).await;
        assert_eq!(res["type"], "message", "{res}");
        assert_eq!(res["class"], "GenerateUrlError", "{res}");
        assert_eq!(res["code"], 200);
        assert_eq!(res["body"]["attachmentId"], id.as_str());
        assert_eq!(
            res["body"]["errorCode"], code,
            "{name:?} {ty} {size}: {res}"
        );
        assert!(res["body"]["errorMessage"].is_string());

        let mut plain = on_attachment("tok", &id, name, ty, size);
        plain
            .as_object_mut()
            .expect("object")
            .remove("errorsAsJson");
        let res = request(&mut ws, plain).await;
        assert_eq!(res["type"], "response", "{res}");
        assert_eq!(res["class"], "string");
        assert_eq!(res["code"], code);
        assert!(res["body"].is_string());

        let (status, _) = get_json(&ts, &format!("/guest/attachments/{id}")).await;
        assert_eq!(status, 404, "refused attachments are not recorded");
    }
    // Missing fields: 4020, naming the first one missing; wrong types: 400.
    let res = request(&mut ws, json!({"action": "onAttachment", "token": "tok"})).await;
    assert_eq!(
        res,
        json!({"type": "response", "class": "string", "code": 4020,
               "body": "missing parameter: attachmentId"})
    );
    let res = request(
        &mut ws,
        json!({"action": "onAttachment", "token": "tok",
        "attachmentId": "x", "fileSize": "12", "fileType": "image/png", "fileName": "a.png"}),
    )
    .await;
    assert_eq!(res["code"], 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_then_url() {
    let ts = start_with_garage(None).await;
    let mut ws = session(&ts, "faults=rate-limit:1,retry-after:3", "tok").await;
    let res = request(&mut ws, on_attachment("tok", "a", "a.png", "image/png", 5)).await;
    assert_eq!(
        res,
        json!({"type": "response", "class": "TooManyRequestsErrorMessage", "code": 429,
               "body": {"retryAfter": 3, "errorCode": 4029,
                        "errorMessage": "Message rate too high for this session"}})
    );
    let res = request(&mut ws, on_attachment("tok", "a", "a.png", "image/png", 5)).await;
    assert_eq!(res["class"], "PresignedUrlResponse");
    // Per connection: a new connection starts over.
    let mut ws2 = session(&ts, "faults=rate-limit:1", "tok2").await;
    let res = request(
        &mut ws2,
        on_attachment("tok2", "b", "b.png", "image/png", 5),
    )
    .await;
    assert_eq!(res["body"]["retryAfter"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_url_then_fresh_url() {
    let ts = start_with_garage(None).await;
    let mut ws = session(&ts, "faults=expired-url:1", "tok").await;
    let data = payload(1000);
    let first = request(
        &mut ws,
        on_attachment("tok", "a", "a.txt", "text/plain", data.len()),
    )
    .await;
    let res = put(&ts, &first, &data).await;
    // Garage 2.5 refuses an expired presigned URL with 400 (AWS: 403).
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(res.text().contains("Date is too old"), "{}", res.text());
    silence(&mut ws).await;
    // Asking again for the same attachment gives a fresh, working URL.
    let second = request(
        &mut ws,
        on_attachment("tok", "a", "a.txt", "text/plain", data.len()),
    )
    .await;
    assert_ne!(first["body"]["url"], second["body"]["url"]);
    assert_eq!(put(&ts, &second, &data).await.status, 200);
    assert_eq!(recv(&mut ws).await["class"], "UploadSuccessEvent");
    let a = attachment(&ts, "a").await;
    assert_eq!(a["urlRequests"].as_u64(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_failure_then_success() {
    let ts = start_with_garage(None).await;
    let mut ws = session(&ts, "faults=upload-failure:1", "tok").await;
    let data = payload(2000);
    let p = request(
        &mut ws,
        on_attachment("tok", "a", "a.png", "image/png", data.len()),
    )
    .await;
    assert_eq!(put(&ts, &p, &data).await.status, 200);
    let ev = recv(&mut ws).await;
    assert_eq!(ev["type"], "message");
    assert_eq!(ev["class"], "UploadFailureEvent");
    assert_eq!(ev["body"]["attachmentId"], "a");
    assert_eq!(ev["body"]["errorCode"], 4008);
    assert_eq!(ev["body"]["errorMessage"], "attachment has expired");
    let a = attachment(&ts, "a").await;
    assert_eq!(a["state"], "requested");
    assert_eq!(a["sha256"], Value::Null);
    upload(&ts, &mut ws, "tok", "a", "a.png", "image/png", &data).await;
    let a = attachment(&ts, "a").await;
    assert_eq!(a["state"], "uploaded");
    assert_eq!(a["sha256"], sha256_hex(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_mismatch_is_4003() {
    let ts = start_with_garage(None).await;
    let mut ws = session(&ts, "", "tok").await;
    let data = payload(500);
    let mut req = on_attachment("tok", "a", "a.txt", "text/plain", data.len());
    req["fileMd5"] = json!(md5_hex(b"something else"));
    let p = request(&mut ws, req).await;
    assert_eq!(put(&ts, &p, &data).await.status, 200);
    let ev = recv(&mut ws).await;
    assert_eq!(ev["class"], "UploadFailureEvent");
    assert_eq!(ev["body"]["errorCode"], 4003);
    assert_eq!(ev["body"]["errorMessage"], "file content invalid");
    let a = attachment(&ts, "a").await;
    assert_eq!(a["state"], "failed");
    assert_eq!(a["md5"], md5_hex(&data));
    let res = common::send(ts.addr, "GET", "/guest/files/a/a.txt", &[], b"").await;
    assert_eq!(res.status, 404);
}

fn on_message(token: &str, text: &str, ids: &[&str]) -> Value {
    let content: Vec<Value> = ids
        .iter()
        .map(|id| json!({"contentType": "Attachment", "attachment": {"id": id}}))
        .collect();
    json!({"action": "onMessage", "token": token,
           "message": {"type": "Text", "text": text, "content": content}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_with_attachments() {
    let ts = start_with_garage(None).await;
    let mut ws = session(&ts, "", "tok").await;
    let data = payload(3000);
    let ev = upload(
        &ts,
        &mut ws,
        "tok",
        "r",
        "report.pdf",
        "application/pdf",
        &data,
    )
    .await;

    let inbound = request(&mut ws, on_message("tok", "here it is", &["r"])).await;
    assert_eq!(inbound["type"], "message");
    assert_eq!(inbound["class"], "StructuredMessage");
    assert_eq!(inbound["code"], 200);
    let b = &inbound["body"];
    assert_eq!(b["id"].as_str().map(str::len), Some(36));
    assert!(is_rfc3339(&b["channel"]["time"]), "{b}");
    assert_eq!(b["channel"]["type"], "Private");
    assert_eq!(b["type"], "Text");
    assert_eq!(b["text"], "here it is");
    assert_eq!(b["direction"], "Inbound");
    assert_eq!(b["originatingEntity"], "Human");
    assert_eq!(
        b["content"],
        json!([{"contentType": "Attachment", "attachment": {
            "id": "r", "url": ev["body"]["downloadUrl"], "filename": "report.pdf",
            "mime": "application/pdf", "mediaType": "File", "fileSize": data.len(),
            "sha256": sha256_hex(&data)}}])
    );
    let reply = recv(&mut ws).await;
    assert_eq!(reply["class"], "StructuredMessage");
    assert_eq!(reply["body"]["direction"], "Outbound");
    assert_eq!(reply["body"]["originatingEntity"], "Human");
    assert_eq!(reply["body"]["type"], "Text");
    assert_eq!(reply["body"]["text"], "Thanks, I received report.pdf.");

    // Text only.
    let inbound = request(&mut ws, on_message("tok", "hello", &[])).await;
    assert_eq!(inbound["body"]["text"], "hello");
    assert_eq!(inbound["body"].get("content"), None);
    assert_eq!(recv(&mut ws).await["body"]["text"], "You said: hello");

    // Not uploaded yet: 4010; unknown: 4009.
    let p = request(
        &mut ws,
        on_attachment("tok", "pending", "p.png", "image/png", 5),
    )
    .await;
    assert_eq!(p["class"], "PresignedUrlResponse");
    let res = request(&mut ws, on_message("tok", "", &["r", "pending"])).await;
    assert_eq!(
        res,
        json!({"type": "response", "class": "string", "code": 4010,
               "body": "attachment not successfully uploaded"})
    );
    let res = request(&mut ws, on_message("tok", "x", &["nope"])).await;
    assert_eq!(
        (res["class"].as_str(), res["code"].as_u64()),
        (Some("string"), Some(4009))
    );
    silence(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_attachment() {
    let ts = start_with_garage(None).await;
    let mut ws = session(&ts, "", "tok").await;
    let data = payload(100);
    upload(&ts, &mut ws, "tok", "d", "d.png", "image/png", &data).await;
    let res = request(
        &mut ws,
        json!({"action": "deleteAttachment", "token": "tok", "attachmentId": "d"}),
    )
    .await;
    assert_eq!(
        res,
        json!({"type": "message", "class": "AttachmentDeletedResponse", "code": 200,
               "body": {"attachmentId": "d"}})
    );
    let a = attachment(&ts, "d").await;
    assert_eq!(a["state"], "deleted");
    assert_eq!(a["size"], Value::Null);
    let res = common::send(ts.addr, "GET", "/guest/files/d/d.png", &[], b"").await;
    assert_eq!(res.status, 404);
    let res = request(
        &mut ws,
        json!({"action": "deleteAttachment", "token": "tok", "attachmentId": "d"}),
    )
    .await;
    assert_eq!(
        (res["class"].as_str(), res["code"].as_u64()),
        (Some("string"), Some(4009))
    );
    let res = request(&mut ws, on_message("tok", "", &["d"])).await;
    assert_eq!(res["code"], 4009);
    let log = requests(&ts, "tok").await;
    assert_eq!(
        log,
        json!([
            "configureSession",
            "onAttachment",
            "deleteAttachment",
            "deleteAttachment",
            "onMessage"
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_errors_echo_and_request_log() {
    let ts = start_with_garage(None).await;
    let mut ws = connect(&ts, "").await;
    let res = request(&mut ws, on_attachment("tok", "a", "a.png", "image/png", 5)).await;
    assert_eq!(
        res,
        json!({"type": "response", "class": "string", "code": 4007, "body": "session not found"})
    );
    let res = request(
        &mut ws,
        json!({"action": "configureSession", "token": "tok",
        "deploymentId": DEPLOYMENT}),
    )
    .await;
    assert_eq!(res["class"], "SessionResponse");
    let res = request(
        &mut ws,
        json!({"action": "echo", "token": "tok", "message": {"type": "Text", "text": "ping"}}),
    )
    .await;
    assert_eq!(res["type"], "response");
    assert_eq!(res["class"], "StructuredMessage");
    assert_eq!(res["code"], 200);
    assert_eq!(res["body"]["text"], "ping");
    assert_eq!(res["body"]["type"], "Text");
    assert_eq!(res["body"]["direction"], "Inbound");
    assert_eq!(res["body"]["id"].as_str().map(str::len), Some(36));
    let res = request(&mut ws, json!({"action": "dance", "token": "tok"})).await;
    assert_eq!(
        (res["class"].as_str(), res["code"].as_u64()),
        (Some("string"), Some(400))
    );
    // Another session's token on this connection: not found.
    let res = request(
        &mut ws,
        json!({"action": "echo", "token": "other", "message": {}}),
    )
    .await;
    assert_eq!(res["code"], 4007);
    let res = request(&mut ws, json!("not an object")).await;
    assert_eq!(res["code"], 400);
    ws.send(Message::text("{not json")).await.expect("send");
    assert_eq!(recv(&mut ws).await["code"], 400);

    assert_eq!(
        requests(&ts, "tok").await,
        // The bare string logs as ""; the frame that is not JSON is no request.
        json!(["onAttachment", "configureSession", "echo", "dance", ""])
    );
    assert_eq!(requests(&ts, "other").await, json!(["echo"]));
    let (status, _) = get_json(&ts, "/guest/sessions/unknown").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expired_is_4006() {
    let ts = start_with_garage(None).await;
    let mut ws = session(&ts, "faults=session-expired", "tok").await;
    for _ in 0..2 {
        let res = request(&mut ws, on_attachment("tok", "a", "a.png", "image/png", 5)).await;
        assert_eq!(
            res,
            json!({"type": "response", "class": "string", "code": 4006, "body": "session has expired"})
        );
    }
    assert_eq!(
        requests(&ts, "tok").await,
        json!(["configureSession", "onAttachment", "onAttachment"])
    );
}

/// `putFaults` puts a route family in front of the URL's path; the chunkup-server proxy
/// in front of Garage (the public endpoint) strips it and applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_faults_pick_the_route_family() {
    use chunkup_server::faults::FaultSpec;
    use chunkup_server::proxy::{self, Upstream};
    let cluster = garage::shared();
    let upstream = Upstream::parse(&cluster.endpoints[0]).expect("upstream");
    let p = proxy::start(upstream, "127.0.0.1", 0, FaultSpec::default(), 1)
        .await
        .expect("proxy");
    let ts = start_with_garage(Some(&p.url())).await;
    let mut ws = session(&ts, "putFaults=500:1", "tok").await;
    let data = payload(10);
    let first = request(
        &mut ws,
        on_attachment("tok", "a", "a.png", "image/png", data.len()),
    )
    .await;
    let url = first["body"]["url"].as_str().expect("url");
    assert!(
        url.starts_with(&format!("{}faults/500%3A1/chunkup/", p.url())),
        "{url}"
    );
    assert_eq!(put(&ts, &first, &data).await.status, 500);
    silence(&mut ws).await;
    assert_eq!(attachment(&ts, "a").await["state"], "requested");

    // A family whose faults let it through reaches Garage, signature intact.
    let mut ws = session(&ts, "putFaults=latency:1", "tok2").await;
    let second = request(
        &mut ws,
        on_attachment("tok2", "b", "b.png", "image/png", data.len()),
    )
    .await;
    assert!(second["body"]["url"]
        .as_str()
        .is_some_and(|u| u.contains("/faults/latency%3A1/chunkup/")));
    let res = put(&ts, &second, &data).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(recv(&mut ws).await["class"], "UploadSuccessEvent");
    assert_eq!(attachment(&ts, "b").await["sha256"], sha256_hex(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connection_parameters_close_with_1008() {
    let ts = start_with_garage(None).await;
    for (query, needle) in [
        ("faults=bogus:1", "bad faults"),
        ("putFaults=500:7", "bad putFaults"),
        ("deploymentId=", "deploymentId is required"),
    ] {
        let mut ws = connect(&ts, query).await;
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("close within 5 s")
            .expect("a frame")
            .expect("frame ok");
        let Message::Close(Some(frame)) = msg else {
            panic!("{query}: expected a close frame, got {msg:?}");
        };
        assert_eq!(u16::from(frame.code), 1008, "{query}");
        assert!(
            frame.reason.as_str().contains(needle),
            "{query}: {}",
            frame.reason
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widget_statics() {
    let ts = start_with_garage(None).await;
    let res = common::send(ts.addr, "GET", "/widget/", &[], b"").await;
    assert_eq!(res.status, 404, "missing --widget dir");

    let dir = ts.dir.join("widget");
    std::fs::create_dir_all(dir.join("assets")).expect("mkdir");
    std::fs::write(dir.join("index.html"), "<!doctype html>chat").expect("write");
    std::fs::write(dir.join("assets/x.wasm"), b"\0asm").expect("write");
    let ts = start_with(Opts {
        widget: Some(&dir),
        ..Opts::default()
    })
    .await;
    let res = common::send(ts.addr, "GET", "/widget/", &[], b"").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "<!doctype html>chat");
    let res = common::send(ts.addr, "GET", "/widget/assets/x.wasm", &[], b"").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/wasm"));
    let res = common::send(ts.addr, "GET", "/widget/nope.js", &[], b"").await;
    assert_eq!(res.status, 404);
}

fn string_error(code: u64, body: &str) -> Value {
    json!({"type": "response", "class": "string", "code": code, "body": body})
}

/// 4000: attachments switched off, by the guest fault `attachments-off`
/// (the session still announces its rules) or by an empty
/// `--guest-file-types` (the deployment has none); checked before the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_unavailable_is_4000() {
    let ts = start_with_garage(None).await;
    let mut ws = session(&ts, "faults=attachments-off", "tok").await;
    let off = string_error(
        4000,
        "feature unavailable: attachments are disabled for this deployment",
    );
    for id in ["a", "b"] {
        let res = request(&mut ws, on_attachment("tok", id, "a.png", "image/png", 5)).await;
        assert_eq!(res, off);
    }
    // Even a request that would fail the file checks, or lacks fields.
    let res = request(&mut ws, on_attachment("tok", "c", "a.exe", "x/y", 0)).await;
    assert_eq!(res, off);
    let res = request(&mut ws, json!({"action": "onAttachment", "token": "tok"})).await;
    assert_eq!(res, off);
    let (status, _) = get_json(&ts, "/guest/attachments/a").await;
    assert_eq!(status, 404, "refused attachments are not recorded");
    // Another connection without the fault gets its URL.
    let mut other = session(&ts, "", "tok2").await;
    let res = request(
        &mut other,
        on_attachment("tok2", "d", "a.png", "image/png", 5),
    )
    .await;
    assert_eq!(res["class"], "PresignedUrlResponse");

    let none = start_with(Opts {
        guest: Some(GuestRules {
            file_types: vec![],
            ..GuestRules::default()
        }),
        store: Some(garage::shared().store_config(None)),
        ..Opts::default()
    })
    .await;
    let mut ws = session(&none, "", "tok").await;
    let res = request(&mut ws, on_attachment("tok", "a", "a.png", "image/png", 5)).await;
    assert_eq!(res, off);
}

/// 4011: an onMessage text over 4000 UTF-16 code units.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_too_long_is_4011() {
    let ts = start_with_garage(None).await;
    let mut ws = session(&ts, "", "tok").await;
    let at_limit = "é".repeat(4000);
    let res = request(&mut ws, on_message("tok", &at_limit, &[])).await;
    assert_eq!(res["class"], "StructuredMessage", "{res}");
    assert_eq!(recv(&mut ws).await["body"]["direction"], "Outbound");
    let over = format!("{at_limit}x");
    let res = request(&mut ws, on_message("tok", &over, &[])).await;
    assert_eq!(res, string_error(4011, "message too long"));
    // An emoji counts two, as in the browser's `text.length`.
    let res = request(&mut ws, on_message("tok", &"😀".repeat(2001), &[])).await;
    assert_eq!(res["code"], 4011);
    silence(&mut ws).await;
}

/// 4013: an onMessage whose `channel.metadata.customAttributes` are larger
/// than the session's `maxCustomDataBytes` (100) as compact JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_attributes_too_large_is_4013() {
    let ts = start_with_garage(None).await;
    let mut ws = session(&ts, "", "tok").await;
    let with_attrs = |attrs: Value| {
        json!({"action": "onMessage", "token": "tok", "message": {"type": "Text", "text": "hi",
               "channel": {"metadata": {"customAttributes": attrs}}}})
    };
    // {"k":"…"} is 8 bytes plus the value: 92 bytes of value make exactly 100.
    let fits = json!({"k": "v".repeat(92)});
    let res = request(&mut ws, with_attrs(fits.clone())).await;
    assert_eq!(res["class"], "StructuredMessage", "{res}");
    assert_eq!(res["body"]["channel"]["metadata"]["customAttributes"], fits);
    recv(&mut ws).await; // the agent's reply
    let res = request(&mut ws, with_attrs(json!({"k": "v".repeat(93)}))).await;
    assert_eq!(
        res,
        string_error(
            4013,
            "Custom Attributes in channel metadata is larger than 100 bytes"
        )
    );
    let res = request(&mut ws, with_attrs(json!("not an object"))).await;
    assert_eq!(res["code"], 400);
    silence(&mut ws).await;
}

/// 4020: a required field absent (or null) in any request; present with a
/// wrong type or empty is a plain 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_parameter_is_4020() {
    let ts = start_with_garage(None).await;
    let mut ws = connect(&ts, "").await;
    let res = request(
        &mut ws,
        json!({"action": "configureSession", "token": "tok"}),
    )
    .await;
    assert_eq!(res, string_error(4020, "missing parameter: deploymentId"));
    let mut ws = session(&ts, "", "tok").await;
    let mut no_name = on_attachment("tok", "a", "a.png", "image/png", 5);
    no_name.as_object_mut().map(|o| o.remove("fileName"));
    let res = request(&mut ws, no_name).await;
    assert_eq!(res, string_error(4020, "missing parameter: fileName"));
    let mut null_size = on_attachment("tok", "a", "a.png", "image/png", 5);
    null_size["fileSize"] = Value::Null;
    let res = request(&mut ws, null_size).await;
    assert_eq!(res, string_error(4020, "missing parameter: fileSize"));
    let res = request(&mut ws, json!({"action": "onMessage", "token": "tok"})).await;
    assert_eq!(res, string_error(4020, "missing parameter: message"));
    let res = request(
        &mut ws,
        json!({"action": "onMessage", "token": "tok", "message": {"text": "hi",
               "content": [{"contentType": "Attachment", "attachment": {}}]}}),
    )
    .await;
    assert_eq!(res, string_error(4020, "missing parameter: attachment.id"));
    let res = request(
        &mut ws,
        json!({"action": "deleteAttachment", "token": "tok"}),
    )
    .await;
    assert_eq!(res, string_error(4020, "missing parameter: attachmentId"));
    let res = request(&mut ws, json!({"action": "echo", "token": "tok"})).await;
    assert_eq!(res, string_error(4020, "missing parameter: message"));
    // Present but unusable: 400.
    let res = request(
        &mut ws,
        json!({"action": "deleteAttachment", "token": "tok",
                                      "attachmentId": ""}),
    )
    .await;
    assert_eq!(res["code"], 400);
    let res = request(
        &mut ws,
        json!({"action": "echo", "token": "tok", "message": 3}),
    )
    .await;
    assert_eq!(res["code"], 400);
    let (status, _) = get_json(&ts, "/guest/attachments/a").await;
    assert_eq!(status, 404);
}
