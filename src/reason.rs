//! Short phrases for OS errors, the way every message of initbox names them ("connection
//! refused", "permission denied"), without Rust's "(os error 111)" suffix.

use std::io;

/// An io::Error as a short lowercase phrase, without the "(os error 111)" suffix.
pub fn io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::HostUnreachable => "host unreachable".into(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
        io::ErrorKind::AddrNotAvailable => "address not available".into(),
        _ => {
            let text = error.to_string();
            match text.find(" (os error") {
                Some(cut) => text[..cut].to_lowercase(),
                None => text,
            }
        }
    }
}

/// An error and every cause beneath it, outermost first. An io::Error's `source()` skips
/// the error it wraps, and that is where rustls errors and a git server's `ERR` lines hide,
/// so it is looked into explicitly. The walk stops after 64 steps, so a cycle of sources
/// cannot hang it.
pub fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> + 'a {
    std::iter::successors(Some(error), |cause| {
        match cause.downcast_ref::<io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => cause.source(),
        }
    })
    .take(64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn causes_look_inside_an_io_error_to_the_error_it_wraps() {
        let inner = io::Error::other(std::fmt::Error);
        let error = Outer(inner);
        let found: Vec<String> = causes(&error).map(|c| c.to_string()).collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found[0], "outer");
        assert!(causes(&error).last().unwrap().is::<std::fmt::Error>());
    }
}
