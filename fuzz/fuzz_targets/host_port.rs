#![no_main]
//! Proves that parsing a `HOST:PORT` target (`wait-for-tcp`) and a `--nameserver`
//! (`IP[:PORT]`) never panics, that every rejection says why, and that what is accepted
//! prints back as text that parses to the same value.

use std::str::FromStr;

use initbox::checks::tcp::HostPort;
use initbox::resolve::Nameserver;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match HostPort::from_str(text) {
        Ok(target) => {
            assert!(!target.host.is_empty());
            assert_ne!(target.port, 0);
            let shown = target.to_string();
            let again = HostPort::from_str(&shown)
                .unwrap_or_else(|e| panic!("{text:?} → {shown:?} does not parse: {e}"));
            assert_eq!(again, target, "{text:?} → {shown:?}");
        }
        Err(message) => assert!(message.contains("HOST:PORT"), "{message:?}"),
    }
    match Nameserver::from_str(text) {
        Ok(server) => {
            assert_ne!(server.0.port(), 0);
            let shown = server.to_string();
            let again = Nameserver::from_str(&shown)
                .unwrap_or_else(|e| panic!("{text:?} → {shown:?} does not parse: {e}"));
            // The IPv6 scope and flow label are not shown; address and port are.
            assert_eq!(again.0.ip(), server.0.ip(), "{text:?} → {shown:?}");
            assert_eq!(again.0.port(), server.0.port(), "{text:?} → {shown:?}");
        }
        Err(message) => assert!(message.contains("nameserver"), "{message:?}"),
    }
});
