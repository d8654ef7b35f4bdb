//! A sync answer (a peer's whole table) and a sync request: decoding and
//! verifying every update never panic.
#![no_main]

use atmosphere::wire::Message;
use atmosphere::wire::sync::{SyncRequest, SyncResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = SyncRequest::decode(data);
    if let Ok(response) = SyncResponse::decode(data) {
        for update in &response.updates {
            let _ = update.verify(384);
        }
    }
});
