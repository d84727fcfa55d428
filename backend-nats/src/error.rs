//! The client's errors as distsync's.

use async_nats::{RequestError, RequestErrorKind};
use distsync_core::Error;

use crate::BACKEND;

/// Maps a request's error: no responders (JetStream not running, or its stream
/// leader not elected yet), a timeout and a broken connection are
/// [`Error::Connection`] (transient; a write that timed out may have been applied);
/// a request the client refuses to send is [`Error::Backend`].
pub(crate) fn request_error(error: RequestError) -> Error {
    match error.kind() {
        RequestErrorKind::InvalidSubject | RequestErrorKind::MaxPayloadExceeded => {
            Error::backend(BACKEND, error)
        }
        _ => Error::connection(BACKEND, error),
    }
}

/// Whether JetStream answered that it cannot serve the call now (status 503: "JetStream
/// system temporarily unavailable" while a stream's leader is elected, no quorum):
/// transient, as no answer at all is.
pub(crate) fn unavailable(error: &async_nats::jetstream::Error) -> bool {
    error.code() == 503
}

/// Maps an error of a request on a stream's consumer (its creation, its deletion): a
/// request that failed or timed out and JetStream [`unavailable`] are
/// [`Error::Connection`] (transient); any other refusal is [`Error::Backend`].
pub(crate) fn consumer_error(error: async_nats::jetstream::stream::ConsumerError) -> Error {
    use async_nats::jetstream::stream::ConsumerErrorKind;
    match error.kind() {
        ConsumerErrorKind::TimedOut | ConsumerErrorKind::Request => {
            Error::connection(BACKEND, error)
        }
        ConsumerErrorKind::JetStream(api) if unavailable(&api) => Error::connection(BACKEND, error),
        _ => Error::backend(BACKEND, error),
    }
}

/// Maps an error of getting the bucket's stream: a request that failed and JetStream
/// [`unavailable`] are [`Error::Connection`] (transient); any other is
/// [`Error::Backend`].
pub(crate) fn get_stream_error(error: async_nats::jetstream::context::GetStreamError) -> Error {
    use async_nats::jetstream::context::GetStreamErrorKind;
    match error.kind() {
        GetStreamErrorKind::Request => Error::connection(BACKEND, error),
        GetStreamErrorKind::JetStream(api) if unavailable(&api) => {
            Error::connection(BACKEND, error)
        }
        _ => Error::backend(BACKEND, error),
    }
}
