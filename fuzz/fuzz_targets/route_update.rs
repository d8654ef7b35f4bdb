//! A gossiped route update as any peer could send it: decoding and verifying
//! never panic, and whatever decodes encodes back to the same bytes' value.
#![no_main]

use atmosphere::wire::Message;
use atmosphere::wire::route::SignedRouteUpdate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(signed) = SignedRouteUpdate::decode(data) else {
        return;
    };
    // 384 is the shipped model's width; 4 is the golden vectors'.
    let _ = signed.verify(384);
    let _ = signed.verify(4);
    let again = signed.encode().expect("a decoded update encodes");
    assert_eq!(
        SignedRouteUpdate::decode(&again).expect("and decodes again"),
        signed
    );
});
