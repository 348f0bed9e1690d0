//! What a request that could not be proxied is answered, and whose fault it
//! was: Pingora's defaults (502 for the backend, 400 or nothing for the
//! client, 500 for the rest), except a client whose request body stalls
//! (408, its fault, not the backend's) and berth out of file descriptors or
//! memory (503, berth's fault, not the backend's).

use pingora::{Error, ErrorSource, ErrorType};

use crate::resources;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Backend,
    /// berth's own resources ran out.
    Berth,
    /// A bug or an unexpected state.
    Internal,
}

/// The status to answer (0: nothing, the connection is gone) and the fault.
pub fn classify(e: &Error, request_body_done: bool) -> (u16, Fault) {
    if resources::in_chain(e) {
        return (503, Fault::Berth);
    }
    match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(code), ErrorSource::Upstream) => (*code, Fault::Backend),
        (ErrorType::HTTPStatus(code), _) => (*code, Fault::Internal),
        _ if stalled_body(e, request_body_done) => (408, Fault::Client),
        // A backend too slow for `proxy.read_timeout` (or the route's
        // `timeout.read`): a gateway timeout, as nginx answers it.
        (ErrorType::ReadTimedout | ErrorType::ConnectTimedout, ErrorSource::Upstream) => {
            (504, Fault::Backend)
        }
        (_, ErrorSource::Upstream) => (502, Fault::Backend),
        (
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => (0, Fault::Client),
        (_, ErrorSource::Downstream) => (400, Fault::Client),
        (_, ErrorSource::Internal | ErrorSource::Unset) => (500, Fault::Internal),
    }
}

/// The client stopped sending its request body: berth's read of it timed
/// out, or the backend's answer did while the body was not complete (the
/// backend waits for the rest: every chunk passed on restarts that timer,
/// so it ran out with nothing from the client for that long).
pub fn stalled_body(e: &Error, request_body_done: bool) -> bool {
    match (e.etype(), e.esource()) {
        (ErrorType::ReadTimedout, ErrorSource::Downstream) => true,
        (ErrorType::ReadTimedout, ErrorSource::Upstream) => !request_body_done,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(etype: ErrorType, source: ErrorSource) -> Box<Error> {
        let mut e = Error::new(etype);
        match source {
            ErrorSource::Upstream => e.as_up(),
            ErrorSource::Downstream => e.as_down(),
            _ => e.as_in(),
        }
        e
    }

    #[test]
    fn failures_by_table() {
        use ErrorSource::{Downstream as Down, Internal, Upstream as Up};
        use ErrorType::*;
        #[rustfmt::skip]
        let cases = [
            (err(ReadTimedout, Down), true, (408, Fault::Client), "a stalled body, seen downstream"),
            (err(ReadTimedout, Down), false, (408, Fault::Client), "a stalled body, seen downstream"),
            (err(ReadTimedout, Up), false, (408, Fault::Client), "the backend waited for the body"),
            (err(ReadTimedout, Up), true, (504, Fault::Backend), "a slow backend"),
            (err(ConnectTimedout, Up), true, (504, Fault::Backend), "a backend that does not accept"),
            (err(ConnectRefused, Up), true, (502, Fault::Backend), "a backend that refuses"),
            (err(HTTPStatus(503), Internal), true, (503, Fault::Internal), "berth's own answer"),
            (err(ConnectionClosed, Down), false, (0, Fault::Client), "the client went away"),
            (err(InvalidHTTPHeader, Down), true, (400, Fault::Client), "a bad request"),
            (err(InternalError, Internal), true, (500, Fault::Internal), "a bug"),
        ];
        for (e, body_done, want, why) in cases {
            assert_eq!(classify(&e, body_done), want, "{why}");
        }
        // Out of file descriptors when connecting: never the backend's fault.
        let socket = Error::because(
            SocketError,
            "socket()",
            std::io::Error::from_raw_os_error(24),
        );
        let e = Error::because(HTTPStatus(503), "berth is out of resources", socket).into_up();
        assert_eq!(classify(&e, true), (503, Fault::Berth));
    }
}
