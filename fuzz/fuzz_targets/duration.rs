#![no_main]
//! Proves that parsing a duration (`90s`, `2m30s`, `1.5`) and a byte size (`512k`, `1GiB`)
//! never panics and that every rejection names the value. Both print in a short, rounded
//! human form; what is true of that form is checked: a size printed without a fraction
//! parses back to itself, and a printed duration parses back (rounding happens once), and
//! never to zero unless it was zero (zero means "no limit" for a timeout).

use std::str::FromStr;

use initbox::duration::Duration;
use initbox::size::ByteSize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    match Duration::from_str(text) {
        Ok(duration) => {
            let shown = duration.to_string();
            let again = Duration::from_str(&shown)
                .unwrap_or_else(|e| panic!("{text:?} → {shown:?} does not parse: {e}"));
            assert_eq!(again.to_string(), shown, "{text:?} → {shown:?}");
            assert_eq!(
                again.get().is_zero(),
                duration.get().is_zero(),
                "{text:?} → {shown:?}"
            );
        }
        Err(message) => assert!(message.contains(text.trim()), "{message:?}"),
    }

    match ByteSize::from_str(text) {
        Ok(size) => {
            let shown = size.to_string();
            // Exact when printed without a fraction and small enough for an f64.
            if !shown.contains('.') && size.0 < 1 << 53 {
                assert_eq!(ByteSize::from_str(&shown), Ok(size), "{text:?} → {shown:?}");
            }
        }
        Err(message) => assert!(message.contains(text), "{message:?}"),
    }
});
