//! RESOURCE_EXHAUSTED for a request larger than the service accepts.
//!
//! tonic's decoder refuses a message over `max_decoding_message_size` with
//! OUT_OF_RANGE, hard-coded and not configurable; gRPC's convention for a
//! message over a size limit is RESOURCE_EXHAUSTED. For unary and
//! server-streaming calls tonic answers that refusal as a headers-only
//! response carrying the `Status` in its extensions, so one response layer
//! can rewrite it. (Client-streaming calls see the refusal as an error item
//! of their inbound stream; the handler maps it, see `audit-writer`'s
//! Ingest.)

use http::HeaderValue;
use tonic::{Code, Status};

/// The prefix of tonic's message for an over-large inbound message.
const DECODE_TOO_LARGE: &str = "Error, decoded message length too large";

/// Whether `status` is tonic's refusal of an over-large inbound message.
pub fn is_oversized_request(status: &Status) -> bool {
    status.code() == Code::OutOfRange && status.message().starts_with(DECODE_TOO_LARGE)
}

/// The status to answer instead: RESOURCE_EXHAUSTED with the sizes.
pub fn oversized_status(status: &Status) -> Status {
    let detail = status
        .message()
        .strip_prefix(DECODE_TOO_LARGE)
        .unwrap_or_default()
        .trim_start_matches(':')
        .trim();
    Status::resource_exhausted(format!(
        "request message too large ({detail}): split it or send a smaller batch"
    ))
}

/// Rewrites tonic's OUT_OF_RANGE for an over-large request into
/// RESOURCE_EXHAUSTED; every other response passes untouched. Install with
/// `tower::util::MapResponseLayer::new(rewrite_oversized::<Body>)`.
pub fn rewrite_oversized<B>(mut response: http::Response<B>) -> http::Response<B> {
    let Some(status) = response.extensions().get::<Status>() else {
        return response;
    };
    if !is_oversized_request(status) {
        return response;
    }
    let status = oversized_status(status);
    let headers = response.headers_mut();
    headers.remove(Status::GRPC_MESSAGE);
    headers.remove(Status::GRPC_STATUS);
    if status.add_header(headers).is_err() {
        // The message is ASCII built above; fall back to the bare code.
        headers.insert(
            Status::GRPC_STATUS,
            HeaderValue::from(Code::ResourceExhausted as i32),
        );
    }
    response.extensions_mut().insert(status);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_decoder_refusal_is_rewritten() {
        let refused = Status::out_of_range(
            "Error, decoded message length too large: found 2000 bytes, the limit is: 1024 bytes",
        );
        let response: http::Response<()> = rewrite_oversized(refused.into_http());
        let headers = response.headers();
        assert_eq!(headers[Status::GRPC_STATUS], "8");
        let message = headers[Status::GRPC_MESSAGE].to_str().unwrap_or_default();
        assert!(message.contains("2000%20bytes"), "{message}");
        assert_eq!(
            response.extensions().get::<Status>().map(Status::code),
            Some(Code::ResourceExhausted)
        );

        for other in [
            Status::out_of_range("page 7 is past the end"),
            Status::invalid_argument("bad"),
        ] {
            let code = other.code();
            let response: http::Response<()> = rewrite_oversized(other.into_http());
            assert_eq!(
                response.headers()[Status::GRPC_STATUS],
                HeaderValue::from(code as i32)
            );
        }
        let ok: http::Response<()> = rewrite_oversized(http::Response::new(()));
        assert!(ok.headers().get(Status::GRPC_STATUS).is_none());
    }
}
