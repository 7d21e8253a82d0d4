//! Fuzz target: decoding every frame header type of the protocol (proto/src/messages.rs and
//! proto/src/groups.rs), as the broker and the client decode what a peer sent.
//!
//! Input: byte 0 picks the header type (and so the frame kind), the rest is the MessagePack
//! header. Decoding must fail cleanly or give a value that encodes and decodes to itself: the
//! protocol promises that what one peer writes the other reads back unchanged.

#![no_main]

use std::fmt::Debug;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use quiver_proto::groups::{GroupRequest, GroupResponse, QueueRequest, QueueResponse};
use quiver_proto::messages::{decode_header, encode_header};
use quiver_proto::{
    AdminRequest, AdminResponse, ErrorBody, FetchRequest, FetchResponse, Frame, Hello, HelloOk,
    Message, ProduceRequest, ProduceResponse,
};

fuzz_target!(|data: &[u8]| {
    let [which, header @ ..] = data else {
        return;
    };
    // Every header type that has a frame kind (the `Message` impls); a new one belongs here.
    match which % 13 {
        0 => check::<Hello>(header),
        1 => check::<HelloOk>(header),
        2 => check::<ProduceRequest>(header),
        3 => check::<ProduceResponse>(header),
        4 => check::<FetchRequest>(header),
        5 => check::<FetchResponse>(header),
        6 => check::<AdminRequest>(header),
        7 => check::<AdminResponse>(header),
        8 => check::<GroupRequest>(header),
        9 => check::<GroupResponse>(header),
        10 => check::<QueueRequest>(header),
        11 => check::<QueueResponse>(header),
        _ => check::<ErrorBody>(header),
    }
});

fn check<M: Message + PartialEq + Debug>(header: &[u8]) {
    // As the receiving side does it: from a frame of M's kind, replies also as an error frame.
    let frame = Frame::from_parts(M::KIND, Bytes::copy_from_slice(header), Bytes::new())
        .expect("a header under the size limit");
    let decoded = frame.decode::<M>();
    let direct = decode_header::<M>(header);
    assert_eq!(decoded, direct);
    let _ = frame.decode_reply::<M>();
    if let Ok(body) = decode_header::<ErrorBody>(header) {
        // Unknown codes read as `Unknown`; the text of any code renders.
        let _ = body.to_string();
    }
    let Ok(msg) = direct else {
        return;
    };
    let again = encode_header(&msg).expect("a decoded header encodes");
    let back = decode_header::<M>(&again)
        .unwrap_or_else(|e| panic!("{msg:?} encodes to bytes that do not decode: {e}"));
    assert_eq!(back, msg, "re-encoding changed the header");
}
