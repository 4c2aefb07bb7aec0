//! The accept loop and killable connections. Each TCP connection is served
//! by hyper directly (rather than `axum::serve`) so that a handler can kill
//! its own connection: the `reset` fault must look to the browser like a
//! network failure, not like an HTTP response.
//!
//! Every request carries a [`ConnKill`] extension. Killing sets a flag and
//! wakes the connection task, which drops the hyper connection at once; the
//! socket is closed with `SO_LINGER = 0`, so the kernel sends RST and
//! discards anything unsent, and the IO wrapper refuses all further reads and
//! writes so not a byte of a response can leave after the kill.
//!
//! The client side is here too: [`send_on_new_connection`], the one way the
//! proxy and the S3 store client send a request upstream.
//!
//! Connections are served `with_upgrades()`, so a `101 Switching Protocols`
//! answer (the guest API's WebSocket, `guest.rs`) hands the socket to the
//! upgraded stream: the connection future then finishes and the WebSocket
//! lives on in the task axum spawns for it, still through [`KillableIo`]
//! (nothing kills it, so it behaves like the plain socket).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt as _;

/// Shared between a connection's task and the requests it carries.
#[derive(Debug, Default)]
pub struct KillSwitch {
    killed: AtomicBool,
    notify: Notify,
}

impl KillSwitch {
    /// Aborts the connection: no response is sent, the peer sees RST.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        // `notify_one` stores a permit, so the wake-up is not lost even if
        // the connection task is not waiting at this instant.
        self.notify.notify_one();
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    async fn killed(&self) {
        while !self.is_killed() {
            self.notify.notified().await;
        }
    }
}

/// Request extension giving a handler the power to kill its connection.
#[derive(Debug, Clone)]
pub struct ConnKill(pub Arc<KillSwitch>);

/// Ends a `reset` fault: kills the request's connection so the client sees it drop with
/// no HTTP answer. The returned response is never delivered (the connection is dead),
/// unless the connection cannot be killed, when the 500 says so.
pub fn kill(kill: Option<ConnKill>) -> axum::response::Response {
    use axum::http::StatusCode;
    match kill {
        Some(ConnKill(switch)) => {
            switch.kill();
            crate::tus::plain(StatusCode::INTERNAL_SERVER_ERROR, "connection reset")
        }
        None => crate::tus::plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reset fault: connection cannot be killed",
        ),
    }
}

/// The socket as seen by hyper; fails all IO once killed and, when dropped
/// after a kill, sets zero linger so closing it sends RST.
struct KillableIo {
    inner: TcpStream,
    kill: Arc<KillSwitch>,
}

fn killed_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "connection killed by fault")
}

impl AsyncRead for KillableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.kill.is_killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.kill.is_killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.kill.is_killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kill.is_killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A graceful shutdown would send FIN; a killed socket must RST.
        if self.kill.is_killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Drop for KillableIo {
    fn drop(&mut self) {
        if self.kill.is_killed() {
            // Zero linger turns the close below into an abortive close (RST),
            // which is what a browser reports as a network error.
            let _ = self.inner.set_zero_linger();
        }
    }
}

/// Accepts connections forever, serving each on its own task.
pub async fn serve(listener: TcpListener, app: Router) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(serve_connection(stream, peer, app.clone()));
            }
            Err(e) => {
                // Typically EMFILE; back off instead of spinning.
                eprintln!("chunkup-server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, _peer: SocketAddr, app: Router) {
    // Small tus responses should not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let kill = Arc::new(KillSwitch::default());
    let io = KillableIo {
        inner: stream,
        kill: kill.clone(),
    };
    let request_kill = kill.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnKill(request_kill.clone()));
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {})) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        // Without this hyper answers the 101 but never releases the socket
        // to the WebSocket.
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        // Biased so a kill always wins over letting hyper make progress
        // (for instance writing a response the handler returned).
        biased;
        () = kill.killed() => {}
        _ = conn.as_mut() => {}
    }
    // Dropping `conn` drops the KillableIo; after a kill that closes the
    // socket with RST.
}

/// Why [`send_on_new_connection`] got no answer: the step that failed, and
/// the error (for logs; it holds no header value).
#[derive(Debug)]
pub struct UpstreamError {
    /// `"unreachable"`, `"handshake"` or `"request failed"`.
    pub step: &'static str,
    pub error: String,
}

/// Sends `request` to `host:port` over a connection of its own (HTTP/1.1,
/// no Nagle) and returns the answer with its body still to read; the
/// connection lives until that body is read to the end or dropped. No pool:
/// nothing waits behind another request, and a request whose body breaks
/// breaks exactly its own connection, as a real dropped connection would.
pub async fn send_on_new_connection<B>(
    host: &str,
    port: u16,
    request: Request<B>,
) -> Result<hyper::Response<Incoming>, UpstreamError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let failed = |step: &'static str, error: String| UpstreamError { step, error };
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| failed("unreachable", e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed("handshake", e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| failed("request failed", e.to_string()))
}
