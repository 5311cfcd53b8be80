//! One connection to lbd: hello, then requests and their responses.

use lbproto::{
    read_frame, write_frame, ErrorReply, Outcome, Request, RequestFrame, Response, ResponseFrame, PROTOCOL_VERSION,
};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub enum Error {
    /// lbd answered with an error.
    Refused(ErrorReply),
    /// The connection failed or broke.
    Io(String),
}

pub struct Client {
    stream: UnixStream,
    next_id: u64,
}

impl Client {
    /// Connects and says hello.
    pub fn connect(path: &Path) -> Result<Client, String> {
        let stream = UnixStream::connect(path).map_err(|e| {
            format!(
                "cannot connect to lbd at {}: {e} (is lbd running? --socket picks another instance)",
                path.display()
            )
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
        let mut c = Client { stream, next_id: 1 };
        let hello =
            Request::Hello { protocol: PROTOCOL_VERSION, client: format!("lbctl {}", env!("CARGO_PKG_VERSION")) };
        match c.call(hello) {
            Ok(Response::Hello { .. }) => Ok(c),
            Ok(other) => Err(format!("unexpected answer to hello: {other:?}")),
            Err(Error::Refused(e)) => Err(e.to_string()),
            Err(Error::Io(m)) => Err(m),
        }
    }

    pub fn call(&mut self, request: Request) -> Result<Response, Error> {
        let id = self.next_id;
        self.next_id += 1;
        write_frame(&mut self.stream, &RequestFrame { id, request })
            .map_err(|e| Error::Io(format!("cannot send: {e}")))?;
        let frame: ResponseFrame = read_frame(&mut self.stream)
            .map_err(|e| Error::Io(format!("bad answer from lbd: {e}")))?
            .ok_or_else(|| Error::Io("lbd closed the connection".into()))?;
        if frame.id != id && frame.id != 0 {
            return Err(Error::Io(format!("answer {} to request {id}", frame.id)));
        }
        match frame.result {
            Outcome::Ok(r) => Ok(r),
            Outcome::Error(e) => Err(Error::Refused(e)),
        }
    }
}
