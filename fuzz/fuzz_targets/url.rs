#![no_main]
//! Proves that the HTTP flag parsers never panic: `parse_url` (only http(s) with a host),
//! `parse_header` (`Name: value`), `parse_method`, and `StatusRanges` (`200-299,5xx`).
//! Rejections carry a message; what is accepted survives printing and parsing again.

use std::str::FromStr;

use initbox::http_client::{StatusRanges, parse_header, parse_method, parse_url};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    match parse_url(text) {
        Ok(url) => {
            assert!(matches!(url.scheme(), "http" | "https"), "{url}");
            assert!(url.host_str().is_some_and(|h| !h.is_empty()), "{url}");
            let again = parse_url(url.as_str())
                .unwrap_or_else(|e| panic!("{text:?} → {url} does not parse: {e}"));
            assert_eq!(again, url, "{text:?}");
        }
        Err(message) => assert!(!message.is_empty()),
    }

    match parse_header(text) {
        Ok(header) => {
            if let Ok(value) = header.value.to_str() {
                let line = format!("{}: {value}", header.name);
                let again = parse_header(&line)
                    .unwrap_or_else(|e| panic!("{text:?} → {line:?} does not parse: {e}"));
                assert_eq!(again.name, header.name, "{line:?}");
                assert_eq!(again.value, header.value, "{line:?}");
            }
        }
        Err(message) => assert!(!message.is_empty()),
    }

    match parse_method(text) {
        Ok(method) => {
            let again = parse_method(method.as_str())
                .unwrap_or_else(|e| panic!("{text:?} → {method} does not parse: {e}"));
            assert_eq!(again, method);
        }
        Err(message) => assert!(!message.is_empty()),
    }

    match StatusRanges::from_str(text) {
        Ok(ranges) => {
            let shown = ranges.to_string();
            let again = StatusRanges::from_str(&shown)
                .unwrap_or_else(|e| panic!("{text:?} → {shown:?} does not parse: {e}"));
            assert_eq!(again, ranges, "{text:?} → {shown:?}");
            assert!(!ranges.contains(99) && !ranges.contains(600), "{shown}");
        }
        Err(message) => assert!(message.contains(text), "{message:?}"),
    }
});
