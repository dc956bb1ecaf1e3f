//! sleep: the accepted forms, and that it really waits.

use std::time::Duration;

use crate::support::Sandbox;

#[test]
fn sleeps_for_fractional_seconds() {
    let sandbox = Sandbox::new();
    let output = sandbox.initbox().args(["sleep", "0.3"]).run();
    output.assert_code(0);
    assert!(output.elapsed >= Duration::from_millis(300));
    sandbox
        .initbox()
        .args(["sleep", "100ms"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("sleeping for 100ms");
}

#[test]
fn every_documented_form_is_accepted() {
    let sandbox = Sandbox::new();
    for (form, shown) in [
        ("60", "1m"),
        ("0.5", "500ms"),
        ("90s", "1m30s"),
        ("2m30s", "2m30s"),
    ] {
        let running = sandbox.initbox().args(["sleep", form]).spawn();
        running.wait_for_stderr(&format!("sleeping for {shown}"), Duration::from_secs(10));
        running.signal("TERM");
        let output = running.wait();
        assert!(
            output.code == 143 || (form == "0.5" && output.code == 0),
            "{form}: {output:?}"
        );
    }
}
