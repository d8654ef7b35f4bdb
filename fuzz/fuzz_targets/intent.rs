//! Forwarded requests, their answers and stream frames: decoding never
//! panics, and whatever decodes encodes back to the same value.
#![no_main]

use atmosphere::wire::Message;
use atmosphere::wire::intent::{IntentRequest, IntentResponse, StreamFrame};
use libfuzzer_sys::fuzz_target;

fn round_trip<T: Message + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(m) = T::decode(data) {
        let again = m.encode().expect("a decoded message encodes");
        assert_eq!(T::decode(&again).expect("and decodes again"), m);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<IntentRequest>(data);
    round_trip::<IntentResponse>(data);
    round_trip::<StreamFrame>(data);
});
