//! One connection to lbd: hello, then requests and their responses.

use lbproto::{
    encode, read_frame, write_message, ErrorReply, FrameError, Outcome, Request, RequestFrame, Response, ResponseFrame,
    MAX_REQUEST, MAX_RESPONSE, PROTOCOL_VERSION,
};
use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub enum Error {
    /// lbd answered with an error.
    Refused(ErrorReply),
    /// The connection failed or broke.
    Io(String),
    /// The request is larger than lbd accepts; it was not sent.
    RequestTooLarge(String),
}

pub struct Client {
    stream: UnixStream,
    next_id: u64,
}

/// Why the socket could not be reached, in words that say what to do.
fn connect_error(path: &Path, e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::PermissionDenied => format!(
            "cannot connect to lbd at {}: permission denied (the socket is root's; run lbctl as root, or as a \
             member of the group lbd's control.group names)",
            path.display()
        ),
        _ => format!(
            "cannot connect to lbd at {}: {e} (is lbd running? --socket picks another instance)",
            path.display()
        ),
    }
}

impl Client {
    /// Connects and says hello.
    pub fn connect(path: &Path) -> Result<Client, String> {
        Client::connect_timeout(path, Duration::from_secs(60))
    }

    /// Connects and says hello, waiting at most `limit` for each read or
    /// write (lbd still starting holds a connection unanswered).
    pub fn connect_timeout(path: &Path, limit: Duration) -> Result<Client, String> {
        let stream = UnixStream::connect(path).map_err(|e| connect_error(path, &e))?;
        stream.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
        stream.set_write_timeout(Some(limit)).map_err(|e| e.to_string())?;
        let mut c = Client { stream, next_id: 1 };
        let hello =
            Request::Hello { protocol: PROTOCOL_VERSION, client: format!("lbctl {}", env!("CARGO_PKG_VERSION")) };
        match c.call(hello) {
            Ok(Response::Hello { .. }) => Ok(c),
            Ok(other) => Err(format!("unexpected answer to hello: {other:?}")),
            Err(Error::Refused(e)) => Err(e.to_string()),
            Err(Error::Io(m) | Error::RequestTooLarge(m)) => Err(m),
        }
    }

    /// The next answer (or lbd's own refusal, id 0).
    fn receive(&mut self) -> Result<ResponseFrame, Error> {
        read_frame(&mut self.stream)
            .map_err(|e| match e {
                FrameError::MessageTooLarge { .. } => {
                    Error::Io(format!("lbd's answer exceeds the {MAX_RESPONSE}-byte limit of one answer"))
                }
                e => Error::Io(format!("bad answer from lbd: {e}")),
            })?
            .ok_or_else(|| Error::Io("lbd closed the connection".into()))
    }

    pub fn call(&mut self, request: Request) -> Result<Response, Error> {
        let id = self.next_id;
        self.next_id += 1;
        let body = encode(&RequestFrame { id, request }).map_err(|e| Error::Io(format!("cannot encode: {e}")))?;
        if body.len() > MAX_REQUEST {
            return Err(Error::RequestTooLarge(format!(
                "the request is {} bytes, more than the {MAX_REQUEST}-byte limit lbd accepts; nothing was sent",
                body.len()
            )));
        }
        if let Err(e) = write_message(&mut self.stream, &body) {
            // lbd may have refused us before reading (busy): its reason
            // is waiting to be read.
            return match self.receive() {
                Ok(ResponseFrame { result: Outcome::Error(r), .. }) => Err(Error::Refused(r)),
                _ => Err(Error::Io(format!("cannot send to lbd: {e}"))),
            };
        }
        let frame = self.receive()?;
        if frame.id != id && frame.id != 0 {
            return Err(Error::Io(format!("answer {} to request {id}", frame.id)));
        }
        match frame.result {
            Outcome::Ok(r) => Ok(r),
            Outcome::Error(e) => Err(Error::Refused(e)),
        }
    }
}
